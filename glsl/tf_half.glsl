// Float16 number `i` of a buffer of uint words whose number 0 starts a word (docs/FORMATS.md §14.3: f16 is
// little-endian binary16, so number i is the low half of word i / 2 when i is even).
#define HALF_AT(W, i) unpackHalf2x16((W)[(i) >> 1] >> (((i) & 1) << 4)).x
