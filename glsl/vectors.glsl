// Activation textures (r32f images): element i of a prompt's vector of a layout WIDTH texels wide and ROWS
// rows a prompt sits at (i % WIDTH, prompt * ROWS + i / WIDTH): one row per prompt when the vector fits
// the GPU's texture width, several when it does not (a wide concat context).
ivec2 vector_pixel(int prompt, int i, int width, int rows) { return ivec2(i % width, prompt * rows + i / width); }
