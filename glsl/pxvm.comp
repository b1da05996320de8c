// pxVM: the pixel CPU. One work group per prompt walks the program texture (docs/FORMATS.md §7)
// instruction by instruction; each instruction is split across the group's invocations, with a
// barrier between instructions. Every invocation reads the same program, so control flow is uniform
// and barrier() is legal inside the walk. The host validated the program: addresses are in bounds.
layout(local_size_x = LOCAL_SIZE) in;  // a power of two

#include "weights.glsl"
layout(binding = BINDING_TOKENS) uniform usampler2D tokens;    // the prompts' last CONTEXT_WINDOW tokens
layout(binding = BINDING_PROGRAM) uniform usampler2D program;  // RGB8UI, the program's pixels as stored
// SCRATCH: each prompt's floats in scratch_rows rows of the image's width (a power of two), address a at
// (a % width, a / width) of the prompt's rows.
layout(binding = BINDING_SCRATCH, r32f) coherent uniform image2D scratch;
layout(binding = BINDING_PREDICTION_OUT, rgba8ui) uniform writeonly uimage2D prediction_out;
uniform int pc_begin, pc_end;  // the pixels of this dispatch's instructions
// The part of each instruction this dispatch computes (engine/pxvm/dispatch.py): elements [item_begin,
// item_end) of an elementwise instruction or DOT_PRODUCT, and DOT_PRODUCT's sum terms [term_begin, term_end).
uniform int item_begin, item_end, term_begin, term_end;

int t;             // this invocation
int prompt;        // this work group's prompt
int token_count;   // tokens in the prompt's row
int scratch_rows;  // image rows per prompt
int scratch_shift; // log2 of the scratch image's width

// --- program texture: a pixel stream, row-major ---------------------------------------------------
uvec3 program_pixel(int i) {
    int width = textureSize(program, 0).x;
    return texelFetch(program, ivec2(i % width, i / width), 0).rgb;
}
// A header field (version, scratch size) is one pixel in every version.
int pixel_value(int i) {
    uvec3 px = program_pixel(i);
    return int(px.r | (px.g << 8u) | (px.b << 16u));
}

// An operand is OPERAND_PIXELS pixels (1 in version 0, 2 in version 1), little-endian; the validator keeps
// every operand a program may hold below 2^31.
int operand(int i) {
    int value = pixel_value(i);
#if OPERAND_PIXELS == 2
    uvec3 high = program_pixel(i + 1);
    value |= int(high.r) << 24;
#endif
    return value;
}

// --- memory spaces --------------------------------------------------------------------------------
ivec2 scratch_pixel(int a) {
    return ivec2(a & ((1 << scratch_shift) - 1), prompt * scratch_rows + (a >> scratch_shift));
}
float load(int a) { return imageLoad(scratch, scratch_pixel(a)).r; }
void store(int a, float v) { imageStore(scratch, scratch_pixel(a), vec4(v)); }

// Tensors by their index in the program version's tensor table (the TENSOR_* lists are injected from the
// meta; a tensor the model lacks has scale 0, and the validator lets no program name it).
const int TENSOR_OFFSET[TENSOR_COUNT] = int[TENSOR_COUNT](TENSOR_OFFSETS);
const float TENSOR_SCALE[TENSOR_COUNT] = float[TENSOR_COUNT](TENSOR_SCALES);
const float TENSOR_ZERO[TENSOR_COUNT] = float[TENSOR_COUNT](TENSOR_ZEROS);
float weight(int tensor, int index) {
    return dequant(TENSOR_OFFSET[tensor], TENSOR_SCALE[tensor], TENSOR_ZERO[tensor], index);
}

int token_at(int i) {
    uvec4 px = texelFetch(tokens, ivec2(i, prompt), 0);
    return int(px.r + 256u * px.g);
}

// --- the opcodes ----------------------------------------------------------------------------------
// The first element this invocation computes, and the end of the dispatch's elements of an n-element loop.
int first_item() { return item_begin + t; }
int items(int n) { return min(n, item_end); }

void load_weight_slice(int tensor, int offset, int len, int dst) {
    for (int i = first_item(); i < items(len); i += LOCAL_SIZE) store(dst + i, weight(tensor, offset + i));
}

void load_token(int back, int tensor, int len, int dst) {
    int position = token_count - 1 - back;
    for (int i = first_item(); i < items(len); i += LOCAL_SIZE) {
        store(dst + i, position >= 0 ? weight(tensor, token_at(position) * len + i) : 0.0);
    }
}

void concat_tokens(int tensor, int len, int count, int dst) {
    for (int i = first_item(); i < items(count * len); i += LOCAL_SIZE) {
        int back = count - 1 - i / len;  // slot i / len, oldest first
        store(dst + i, back < token_count ? weight(tensor, token_at(token_count - 1 - back) * len + i % len) : 0.0);
    }
}

// u_j[e] = embed[t_j][e] + pos[j][e], j counting back from the last token.
float attend_u(int embed, int pos, int len, int j, int e) {
    return weight(embed, token_at(token_count - 1 - j) * len + e) + weight(pos, j * len + e);
}

// One attention head (docs/FORMATS.md §7.4): tmp[0..head) = q, tmp[head + j] = the scores (0 past the
// prompt's tokens), dst[0..head) = sum_j softmax(scores)_j v_j. Barriers split the three steps.
void attend(int embed, int pos, int query, int key, int value, int len, int head, int tmp, int dst) {
    for (int dd = t; dd < head; dd += LOCAL_SIZE) {
        float q = 0.0;
        for (int e = 0; e < len; e++) q += attend_u(embed, pos, len, 0, e) * weight(query, e * head + dd);
        store(tmp + dd, q);
    }
    groupMemoryBarrier();
    barrier();
    for (int j = t; j < CONTEXT_WINDOW; j += LOCAL_SIZE) {
        float score = 0.0;
        if (j < token_count) {
            for (int dd = 0; dd < head; dd++) {
                float k = 0.0;
                for (int e = 0; e < len; e++) k += attend_u(embed, pos, len, j, e) * weight(key, e * head + dd);
                score += load(tmp + dd) * k;
            }
            score /= sqrt(float(head));
        }
        store(tmp + head + j, score);
    }
    groupMemoryBarrier();
    barrier();
    for (int dd = t; dd < head; dd += LOCAL_SIZE) {
        float top = load(tmp + head);
        for (int j = 1; j < token_count; j++) top = max(top, load(tmp + head + j));
        float total = 0.0, weighted = 0.0;
        for (int j = 0; j < token_count; j++) {
            float a = exp(load(tmp + head + j) - top);
            float v = 0.0;
            for (int e = 0; e < len; e++) v += attend_u(embed, pos, len, j, e) * weight(value, e * head + dd);
            total += a;
            weighted += a * v;
        }
        store(dst + dd, token_count > 0 ? weighted / total : 0.0);
    }
}

void pool_tokens(int tensor, int len, int dst) {
    for (int i = first_item(); i < items(len); i += LOCAL_SIZE) {
        float sum = 0.0;
        for (int j = 0; j < token_count; j++) sum += weight(tensor, token_at(j) * len + i);
        store(dst + i, sum / float(token_count));
    }
}

void dot_product(int src, int in_len, int tensor, int offset, int out_len, int dst) {
    for (int j = first_item(); j < items(out_len); j += LOCAL_SIZE) {
        float sum = term_begin == 0 ? 0.0 : load(dst + j);  // the sum of the terms before, left by the last part
        for (int k = term_begin; k < min(in_len, term_end); k++) sum += load(src + k) * weight(tensor, offset + k * out_len + j);
        store(dst + j, sum);
    }
}

void add_bias(int dst, int src, int len) {
    for (int i = first_item(); i < items(len); i += LOCAL_SIZE) store(dst + i, load(dst + i) + load(src + i));
}

void relu(int dst, int len) {
    for (int i = first_item(); i < items(len); i += LOCAL_SIZE) store(dst + i, max(load(dst + i), 0.0));
}

#define TOP1_VALUE(src, i) load((src) + (i))
#include "top1_softmax.glsl"

void argmax(int src, int len, int dst) {
    int index;
    float exp_sum;
    top1_softmax(t, src, len, index, exp_sum);
    if (t == 0) {
        store(dst, float(index));
        store(dst + 1, 1.0 / exp_sum);
    }
}

void store_pixel(int src, int out_index) {
    if (t == 0) {
        uint id = uint(clamp(floor(load(src)), 0.0, 65535.0));
        uint confidence = uint(clamp(floor(255.0 * load(src + 1) + 0.5), 0.0, 255.0));
        imageStore(prediction_out, ivec2(out_index, prompt), uvec4(id & 255u, id >> 8u, confidence, uint(WRITTEN_ALPHA)));
    }
}

void main() {
    t = int(gl_LocalInvocationID.x);
    prompt = int(gl_WorkGroupID.x);
    scratch_shift = findMSB(imageSize(scratch).x);
    scratch_rows = ((pixel_value(HEADER_PIXELS - 1) - 1) >> scratch_shift) + 1;  // from the scratch size
    token_count = 0;
    while (token_count < CONTEXT_WINDOW && texelFetch(tokens, ivec2(token_count, prompt), 0).b == uint(TOKEN_MARK)) token_count++;

    // One dispatch walks the instructions whose header pixels lie in [pc_begin, pc_end); scratch carries
    // the state to the next dispatch (llvmpipe stops a shader's loops after 65535 iterations in all).
    int pc = pc_begin;
    while (pc < pc_end) {  // pc grows every step, so the walk ends whatever the texture holds
        uvec3 head = program_pixel(pc);
        int count = int(head.g);
        int a[MAX_OPERANDS];
        for (int i = 0; i < MAX_OPERANDS; i++) a[i] = i < count ? operand(pc + 1 + i * OPERAND_PIXELS) : 0;
        pc += 1 + count * OPERAND_PIXELS;
        int op = int(head.r);
        if (op == OP_LOAD_WEIGHT_SLICE) load_weight_slice(a[0], a[1], a[2], a[3]);
        else if (op == OP_LOAD_TOKEN) load_token(a[0], a[1], a[2], a[3]);
        else if (op == OP_DOT_PRODUCT) dot_product(a[0], a[1], a[2], a[3], a[4], a[5]);
        else if (op == OP_ADD_BIAS) add_bias(a[0], a[1], a[2]);
        else if (op == OP_RELU) relu(a[0], a[1]);
        else if (op == OP_ARGMAX) argmax(a[0], a[1], a[2]);
        else if (op == OP_STORE_PIXEL) store_pixel(a[0], a[1]);
        else if (op == OP_POOL_TOKENS) pool_tokens(a[0], a[1], a[2]);
        else if (op == OP_CONCAT_TOKENS) concat_tokens(a[0], a[1], a[2], a[3]);
        else if (op == OP_ATTEND) attend(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
        else break;  // HALT (the validator lets no other opcode through)
        groupMemoryBarrier();
        barrier();
    }
}
