// T_logits holds one LOGITS_SIDE x LOGITS_SIDE cell per prompt, LOGITS_GRID cells to a row:
// logit k of prompt p sits at cell (p % LOGITS_GRID, p / LOGITS_GRID), pixel (k % SIDE, k / SIDE).
ivec2 logits_pixel(int prompt, int k) {
    ivec2 cell = ivec2(prompt % LOGITS_GRID, prompt / LOGITS_GRID) * LOGITS_SIDE;
    return cell + ivec2(k % LOGITS_SIDE, k / LOGITS_SIDE);
}
