/* Byte-level BPE, as in GPT-2.
 *
 * A tokenizer turns text into a list of integer ids and back. Byte-level BPE works on the
 * UTF-8 bytes of the text, so every string can be encoded (no "unknown" token) and decoding
 * gives the exact bytes back:
 *
 * 1. Pre-tokenisation splits the text into pieces with GPT-2's pattern
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *    (contractions, words with their leading space, numbers, runs of punctuation, spaces).
 *    Merges never cross a piece boundary, so " dog" and " dog." share the token " dog".
 *    piece_end() implements the pattern by hand with real Unicode letter/number classes.
 * 2. Each piece starts as one token per byte; the merges, an ordered list of pairs
 *    (left id, right id) -> new id, are applied lowest rank first (leftmost first among equal
 *    ranks) until no adjacent pair has a merge.
 * 3. Training learns the merges: count every adjacent pair over all pieces of the corpus,
 *    merge the most frequent pair into a new token, update the counts only where that pair
 *    occurred, repeat until the vocabulary has the requested size. Ties between equally
 *    frequent pairs go to the smallest (left id, right id).
 *
 * Special tokens (<|endoftext|>, chat markers) are never produced by merges: encode() emits
 * them only where the caller allows them, by matching their exact text.
 */
#include "gptlab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- Unicode classes ------------------------------------------------------------------- */

/* Code point ranges of \p{L} (letters), \p{N} (numbers) and \s (White_Space), generated from
 * the Python `regex` module (2026.11.19, Unicode 16/17 data) with:
 *   [cp for cp in range(0x110000) if regex.match(r'\p{L}', chr(cp))]  -> merged into ranges. */
static const uint32_t letter_ranges[][2] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6},
    {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A},
    {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
    {0x558, 0x559}, {0x560, 0x588}, {0x58B, 0x58C}, {0x5D0, 0x5EA}, {0x5EF, 0x5F2}, {0x620, 0x64A},
    {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF}, {0x6FA, 0x6FC},
    {0x6FF, 0x6FF}, {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5}, {0x7B1, 0x7B1}, {0x7CA, 0x7EA},
    {0x7F4, 0x7F5}, {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A}, {0x824, 0x824}, {0x828, 0x828},
    {0x840, 0x858}, {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88F}, {0x8A0, 0x8C9}, {0x904, 0x939},
    {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980}, {0x985, 0x98C}, {0x98F, 0x990},
    {0x993, 0x9A8}, {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9}, {0x9BD, 0x9BD}, {0x9CE, 0x9CE},
    {0x9DC, 0x9DD}, {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC}, {0xA05, 0xA0A}, {0xA0F, 0xA10},
    {0xA13, 0xA28}, {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36}, {0xA38, 0xA39}, {0xA59, 0xA5C},
    {0xA5E, 0xA5E}, {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91}, {0xA93, 0xAA8}, {0xAAA, 0xAB0},
    {0xAB2, 0xAB3}, {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0}, {0xAE0, 0xAE1}, {0xAF9, 0xAF9},
    {0xB05, 0xB0C}, {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30}, {0xB32, 0xB33}, {0xB35, 0xB39},
    {0xB3D, 0xB3D}, {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71}, {0xB83, 0xB83}, {0xB85, 0xB8A},
    {0xB8E, 0xB90}, {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C}, {0xB9E, 0xB9F}, {0xBA3, 0xBA4},
    {0xBA8, 0xBAA}, {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C}, {0xC0E, 0xC10}, {0xC12, 0xC28},
    {0xC2A, 0xC39}, {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5C, 0xC5D}, {0xC60, 0xC61}, {0xC80, 0xC80},
    {0xC85, 0xC8C}, {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3}, {0xCB5, 0xCB9}, {0xCBD, 0xCBD},
    {0xCDC, 0xCDE}, {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C}, {0xD0E, 0xD10}, {0xD12, 0xD3A},
    {0xD3D, 0xD3D}, {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61}, {0xD7A, 0xD7F}, {0xD85, 0xD96},
    {0xD9A, 0xDB1}, {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6}, {0xE01, 0xE30}, {0xE32, 0xE33},
    {0xE40, 0xE46}, {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A}, {0xE8C, 0xEA3}, {0xEA5, 0xEA5},
    {0xEA7, 0xEB0}, {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4}, {0xEC6, 0xEC6}, {0xEDC, 0xEDF},
    {0xF00, 0xF00}, {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C}, {0x1000, 0x102A},
    {0x103F, 0x103F}, {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061}, {0x1065, 0x1066},
    {0x106E, 0x1070}, {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5}, {0x10C7, 0x10C7},
    {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D}, {0x1250, 0x1256},
    {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D}, {0x1290, 0x12B0},
    {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5}, {0x12C8, 0x12D6},
    {0x12D8, 0x1310}, {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F}, {0x13A0, 0x13F5},
    {0x13F8, 0x13FD}, {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A}, {0x16A0, 0x16EA},
    {0x16F1, 0x16F8}, {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751}, {0x1760, 0x176C},
    {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC}, {0x1820, 0x1878},
    {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5}, {0x1900, 0x191E},
    {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9}, {0x1A00, 0x1A16},
    {0x1A20, 0x1A54}, {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C}, {0x1B83, 0x1BA0},
    {0x1BAE, 0x1BAF}, {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F}, {0x1C5A, 0x1C7D},
    {0x1C80, 0x1C8A}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC}, {0x1CEE, 0x1CF3},
    {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
    {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
    {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
    {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
    {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F}, {0x208F, 0x209F},
    {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115}, {0x2119, 0x211D},
    {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D}, {0x212F, 0x2139},
    {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2CE4},
    {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27}, {0x2D2D, 0x2D2D},
    {0x2D30, 0x2D67}, {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6}, {0x2DA8, 0x2DAE},
    {0x2DB0, 0x2DB6}, {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE}, {0x2DD0, 0x2DD6},
    {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C},
    {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF}, {0x3105, 0x312F},
    {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF}, {0x4E00, 0xA48C},
    {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B}, {0xA640, 0xA66E},
    {0xA67F, 0xA69D}, {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788}, {0xA78B, 0xA7DD},
    {0xA7E2, 0xA7E2}, {0xA7F1, 0xA801}, {0xA803, 0xA805}, {0xA807, 0xA80A}, {0xA80C, 0xA822},
    {0xA840, 0xA873}, {0xA882, 0xA8B3}, {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE},
    {0xA90A, 0xA925}, {0xA930, 0xA946}, {0xA960, 0xA97C}, {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF},
    {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF}, {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28}, {0xAA40, 0xAA42},
    {0xAA44, 0xAA4B}, {0xAA60, 0xAA76}, {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF}, {0xAAB1, 0xAAB1},
    {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD}, {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2}, {0xAADB, 0xAADD},
    {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4}, {0xAB01, 0xAB06}, {0xAB09, 0xAB0E}, {0xAB11, 0xAB16},
    {0xAB20, 0xAB26}, {0xAB28, 0xAB2E}, {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAB6C, 0xAB6D},
    {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6}, {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D},
    {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28},
    {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E}, {0xFB40, 0xFB41}, {0xFB43, 0xFB44},
    {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F}, {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB},
    {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE},
    {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7}, {0xFFDA, 0xFFDC}, {0x10000, 0x1000B},
    {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D}, {0x1003F, 0x1004D},
    {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0},
    {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375},
    {0x10380, 0x1039D}, {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10500, 0x10527}, {0x10530, 0x10563},
    {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592}, {0x10594, 0x10595},
    {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC},
    {0x105C0, 0x105F3}, {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767},
    {0x10780, 0x10785}, {0x10787, 0x107B0}, {0x107B2, 0x107BF}, {0x10800, 0x10805},
    {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838}, {0x1083C, 0x1083C},
    {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2},
    {0x108F4, 0x108F5}, {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10940, 0x10959},
    {0x10980, 0x109B7}, {0x109BE, 0x109BF}, {0x10A00, 0x10A00}, {0x10A10, 0x10A13},
    {0x10A15, 0x10A17}, {0x10A19, 0x10A35}, {0x10A60, 0x10A7C}, {0x10A80, 0x10A9C},
    {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35}, {0x10B40, 0x10B55},
    {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2},
    {0x10CC0, 0x10CF2}, {0x10D00, 0x10D23}, {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85},
    {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10EC2, 0x10EC7}, {0x10ED9, 0x10EEE},
    {0x10F00, 0x10F1C}, {0x10F27, 0x10F27}, {0x10F30, 0x10F45}, {0x10F70, 0x10F81},
    {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037}, {0x11071, 0x11072},
    {0x11075, 0x11075}, {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126},
    {0x11144, 0x11144}, {0x11147, 0x11147}, {0x11150, 0x11172}, {0x11176, 0x11176},
    {0x11183, 0x111B2}, {0x111C1, 0x111C4}, {0x111DA, 0x111DA}, {0x111DC, 0x111DC},
    {0x11200, 0x11211}, {0x11213, 0x1122B}, {0x1123F, 0x11240}, {0x11280, 0x11286},
    {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D}, {0x1129F, 0x112A8},
    {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328},
    {0x1132A, 0x11330}, {0x11332, 0x11333}, {0x11335, 0x11339}, {0x1133D, 0x1133D},
    {0x11350, 0x11350}, {0x1135D, 0x11361}, {0x11380, 0x11389}, {0x1138B, 0x1138B},
    {0x1138E, 0x1138E}, {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1},
    {0x113D3, 0x113D3}, {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461},
    {0x11480, 0x114AF}, {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE},
    {0x115D8, 0x115DB}, {0x11600, 0x1162F}, {0x11644, 0x11644}, {0x11680, 0x116AA},
    {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746}, {0x11800, 0x1182B},
    {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
    {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941},
    {0x119A0, 0x119A7}, {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3},
    {0x11A00, 0x11A00}, {0x11A0B, 0x11A32}, {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50},
    {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8}, {0x11B0A, 0x11B0A},
    {0x11BC0, 0x11BE0}, {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40},
    {0x11C72, 0x11C8F}, {0x11D00, 0x11D06}, {0x11D08, 0x11D09}, {0x11D0B, 0x11D30},
    {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68}, {0x11D6A, 0x11D89},
    {0x11D98, 0x11D98}, {0x11DB0, 0x11DDB}, {0x11DF1, 0x11DF1}, {0x11EE0, 0x11EF2},
    {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0},
    {0x12000, 0x12399}, {0x12480, 0x12543}, {0x12F90, 0x12FF0}, {0x13000, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x14400, 0x14646}, {0x16100, 0x1611D},
    {0x16800, 0x16A38}, {0x16A40, 0x16A5E}, {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED},
    {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77}, {0x16B7D, 0x16B8F},
    {0x16D40, 0x16D6C}, {0x16E40, 0x16E7F}, {0x16EA0, 0x16EB8}, {0x16EBB, 0x16ED3},
    {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F}, {0x16FE0, 0x16FE1},
    {0x16FE3, 0x16FE3}, {0x16FF2, 0x16FF3}, {0x17000, 0x18CDA}, {0x18CFF, 0x18D20},
    {0x18D80, 0x18DF2}, {0x18E00, 0x19191}, {0x191A0, 0x191D2}, {0x1AFF0, 0x1AFF3},
    {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B128}, {0x1B132, 0x1B132},
    {0x1B150, 0x1B152}, {0x1B155, 0x1B155}, {0x1B164, 0x1B168}, {0x1B170, 0x1B2FB},
    {0x1BC00, 0x1BC6A}, {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99},
    {0x1D400, 0x1D454}, {0x1D456, 0x1D49C}, {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2},
    {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9}, {0x1D4BB, 0x1D4BB},
    {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514},
    {0x1D516, 0x1D51C}, {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544},
    {0x1D546, 0x1D546}, {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A6}, {0x1D6A8, 0x1D6C0},
    {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA}, {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734},
    {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788}, {0x1D78A, 0x1D7A8},
    {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF81}, {0x1DF90, 0x1DF96},
    {0x1DFCD, 0x1DFFF}, {0x1E030, 0x1E06D}, {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D},
    {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD}, {0x1E2C0, 0x1E2EB}, {0x1E4D0, 0x1E4EB},
    {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0}, {0x1E6C0, 0x1E6DE}, {0x1E6E0, 0x1E6E2},
    {0x1E6E4, 0x1E6E5}, {0x1E6E7, 0x1E6ED}, {0x1E6F0, 0x1E6F4}, {0x1E6FE, 0x1E6FF},
    {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE}, {0x1E7F0, 0x1E7FE},
    {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03},
    {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27},
    {0x1EE29, 0x1EE32}, {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B},
    {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47}, {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B},
    {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52}, {0x1EE54, 0x1EE54}, {0x1EE57, 0x1EE57},
    {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F},
    {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72},
    {0x1EE74, 0x1EE77}, {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89},
    {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3}, {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB},
    {0x20000, 0x2A6DF}, {0x2A700, 0x2B81E}, {0x2B820, 0x2CEAD}, {0x2CEB0, 0x2EBE0},
    {0x2EBF0, 0x2EE5D}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A}, {0x31350, 0x33479},
    {0x3D000, 0x3FC3F},
};
static const uint32_t number_ranges[][2] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0x9F4, 0x9F9}, {0xA66, 0xA6F}, {0xAE6, 0xAEF},
    {0xB66, 0xB6F}, {0xB72, 0xB77}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xC78, 0xC7E}, {0xCE6, 0xCEF},
    {0xD58, 0xD5E}, {0xD66, 0xD78}, {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33},
    {0x1040, 0x1049}, {0x1090, 0x1099}, {0x1369, 0x137C}, {0x16EE, 0x16F0}, {0x17E0, 0x17E9},
    {0x17F0, 0x17F9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19DA}, {0x1A80, 0x1A89},
    {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189},
    {0x2460, 0x249B}, {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x2CFD, 0x2CFD}, {0x3007, 0x3007},
    {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195}, {0x3220, 0x3229}, {0x3248, 0x324F},
    {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xA620, 0xA629}, {0xA6E6, 0xA6EF},
    {0xA830, 0xA835}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x10107, 0x10133}, {0x10140, 0x10178},
    {0x1018A, 0x1018B}, {0x102E1, 0x102FB}, {0x10320, 0x10323}, {0x10341, 0x10341},
    {0x1034A, 0x1034A}, {0x103D1, 0x103D5}, {0x104A0, 0x104A9}, {0x10858, 0x1085F},
    {0x10879, 0x1087F}, {0x108A7, 0x108AF}, {0x108FB, 0x108FF}, {0x10916, 0x1091B},
    {0x109BC, 0x109BD}, {0x109C0, 0x109CF}, {0x109D2, 0x109FF}, {0x10A40, 0x10A48},
    {0x10A7D, 0x10A7E}, {0x10A9D, 0x10A9F}, {0x10AEB, 0x10AEF}, {0x10B58, 0x10B5F},
    {0x10B78, 0x10B7F}, {0x10BA9, 0x10BAF}, {0x10CFA, 0x10CFF}, {0x10D30, 0x10D39},
    {0x10D40, 0x10D49}, {0x10E60, 0x10E7E}, {0x10F1D, 0x10F26}, {0x10F51, 0x10F54},
    {0x10FC5, 0x10FCB}, {0x11052, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F},
    {0x111D0, 0x111D9}, {0x111E1, 0x111F4}, {0x112F0, 0x112F9}, {0x11450, 0x11459},
    {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x116D0, 0x116E3},
    {0x11730, 0x1173B}, {0x118E0, 0x118F2}, {0x11950, 0x11959}, {0x11BF0, 0x11BF9},
    {0x11C50, 0x11C6C}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9}, {0x11DE0, 0x11DE9},
    {0x11F50, 0x11F59}, {0x11FC0, 0x11FD4}, {0x12400, 0x1246F}, {0x12475, 0x1247F},
    {0x12550, 0x12686}, {0x16130, 0x16139}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9},
    {0x16B50, 0x16B59}, {0x16B5B, 0x16B61}, {0x16D70, 0x16D79}, {0x16E80, 0x16E96},
    {0x16FF4, 0x16FF6}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3}, {0x1D2E0, 0x1D2F3},
    {0x1D360, 0x1D378}, {0x1D7CE, 0x1D7FF}, {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9},
    {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA}, {0x1E8C7, 0x1E8CF}, {0x1E950, 0x1E959},
    {0x1EC71, 0x1ECAB}, {0x1ECAD, 0x1ECAF}, {0x1ECB1, 0x1ECB4}, {0x1ED01, 0x1ED2D},
    {0x1ED2F, 0x1ED3D}, {0x1F100, 0x1F10C}, {0x1FBF0, 0x1FBF9},
};
static const uint32_t space_ranges[][2] = {
    {0x9, 0xD}, {0x20, 0x20}, {0x85, 0x85}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

enum { CL_OTHER = 0, CL_LETTER = 1, CL_NUMBER = 2, CL_SPACE = 3 };

#define NRANGES(r) (sizeof(r) / sizeof((r)[0]))

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

/* Class of a code point outside the Basic Multilingual Plane (binary search). */
static int class_slow(uint32_t cp) {
    if (in_ranges(letter_ranges, NRANGES(letter_ranges), cp)) return CL_LETTER;
    if (in_ranges(number_ranges, NRANGES(number_ranges), cp)) return CL_NUMBER;
    if (in_ranges(space_ranges, NRANGES(space_ranges), cp)) return CL_SPACE;
    return CL_OTHER;
}

/* bmp: (65536) class of every code point below 0x10000, for O(1) lookups. */
static void class_table_build(uint8_t *bmp) {
    memset(bmp, CL_OTHER, 65536);
    const struct { const uint32_t (*r)[2]; size_t n; uint8_t cl; } sets[3] = {
        {letter_ranges, NRANGES(letter_ranges), CL_LETTER},
        {number_ranges, NRANGES(number_ranges), CL_NUMBER},
        {space_ranges, NRANGES(space_ranges), CL_SPACE}};
    for (int k = 0; k < 3; k++)
        for (size_t i = 0; i < sets[k].n && sets[k].r[i][0] < 65536; i++) {
            uint32_t end = sets[k].r[i][1] < 65535 ? sets[k].r[i][1] : 65535;
            for (uint32_t cp = sets[k].r[i][0]; cp <= end; cp++) bmp[cp] = sets[k].cl;
        }
}

/* Class of the character at s[i] (s has n bytes) and its length in bytes. Lenient UTF-8:
 * a byte that does not start a well-formed sequence counts as one "other" character; an
 * encoded lone surrogate (ED A0..BF xx, as Python's surrogatepass writes it) is "other". */
static inline int class_at(const uint8_t *bmp, const uint8_t *s, size_t n, size_t i,
                           size_t *len) {
    uint8_t c = s[i];
    *len = 1;
    if (c < 0x80) return bmp[c];
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF && i + 1 < n && (s[i + 1] & 0xC0) == 0x80) {
        cp = ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
        *len = 2;
    } else if (c >= 0xE0 && c <= 0xEF && i + 2 < n && (s[i + 1] & 0xC0) == 0x80 &&
               (s[i + 2] & 0xC0) == 0x80) {
        cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
        if (cp < 0x800) return CL_OTHER;
        *len = 3;
    } else if (c >= 0xF0 && c <= 0xF4 && i + 3 < n && (s[i + 1] & 0xC0) == 0x80 &&
               (s[i + 2] & 0xC0) == 0x80 && (s[i + 3] & 0xC0) == 0x80) {
        cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
             ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
        if (cp < 0x10000 || cp > 0x10FFFF) return CL_OTHER;
        *len = 4;
        return class_slow(cp);
    } else {
        return CL_OTHER;
    }
    return bmp[cp];
}

/* ---- pre-tokenisation ------------------------------------------------------------------ */

/* End (exclusive byte offset) of the piece of GPT-2's pattern that starts at s[i], i < n.
 * The alternatives are tried in the pattern's order, as a backtracking regex engine would:
 *   's 't 're 've 'm 'll 'd     contractions (ASCII, case-sensitive)
 *   ' ?' + run of letters | run of numbers | run of "other" (not space/letter/number)
 *   \s+(?!\S)                   a run of spaces not followed by a non-space: the whole run at
 *                               the end of the text, else the run minus its last character
 *                               (which then prefixes the next word)
 *   \s+                         otherwise a single space character before a non-space. */
static size_t piece_end(const uint8_t *bmp, const uint8_t *s, size_t n, size_t i) {
    uint8_t c = s[i];
    if (c == '\'' && i + 1 < n) {
        uint8_t d = s[i + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t e = s[i + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
                return i + 3;
        }
    }
    size_t len, j = i;
    int cl = class_at(bmp, s, n, i, &len);
    if (c == ' ' && i + 1 < n) {
        int next = class_at(bmp, s, n, i + 1, &len);
        if (next != CL_SPACE) {
            cl = next;
            j = i + 1;
        }
    }
    if (cl != CL_SPACE) {
        while (j < n && class_at(bmp, s, n, j, &len) == cl) j += len;
        return j;
    }
    size_t last = i; /* start of the last space character of the run */
    while (j < n && class_at(bmp, s, n, j, &len) == CL_SPACE) {
        last = j;
        j += len;
    }
    if (j == n) return n;
    return last > i ? last : j;
}

/* ---- hashing --------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n, v;
    while (n >= 8) {
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    v = 0;
    for (size_t k = 0; k < n; k++) v |= (uint64_t)s[k] << (8 * k);
    return mix64(h ^ v);
}

static inline uint64_t pair_key(int32_t l, int32_t r) {
    return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
}

static size_t pow2_at_least(size_t n) {
    size_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

/* ---- the tokenizer --------------------------------------------------------------------- */

#define EMPTY_KEY UINT64_MAX
#define NO_RANK UINT32_MAX

typedef struct {
    uint64_t key; /* pair_key(left, right), EMPTY_KEY when free */
    uint32_t rank;
    int32_t id; /* the merged token */
} pair_slot;

typedef struct {
    uint64_t hash;
    int32_t id; /* -1 when free */
} tok_slot;

struct gl_bpe {
    int n_vocab, n_merges, n_special;
    uint8_t *bytes;      /* token id -> bytes[off[id] .. off[id+1]) */
    size_t *off;         /* (n_vocab + 1) */
    uint8_t *special;    /* (n_vocab) 1 for special tokens */
    uint8_t *whole_ok;   /* (n_vocab) 1 when BPE of the token's own bytes gives the token */
    int32_t *merges;     /* (n_merges, 2) in rank order */
    int32_t *special_ids; /* (n_special) ascending */
    int32_t byte_id[256];
    pair_slot *pairs;
    size_t pair_mask;
    tok_slot *toks; /* bytes -> id of ordinary (non-special) tokens */
    size_t tok_mask;
    uint8_t cls[65536];
};

static int32_t tok_find(const gl_bpe *t, const uint8_t *s, size_t n) {
    uint64_t h = hash_bytes(s, n);
    for (size_t i = (size_t)h & t->tok_mask;; i = (i + 1) & t->tok_mask) {
        const tok_slot *p = &t->toks[i];
        if (p->id < 0) return -1;
        if (p->hash == h && t->off[p->id + 1] - t->off[p->id] == n &&
            memcmp(t->bytes + t->off[p->id], s, n) == 0)
            return p->id;
    }
}

static const pair_slot *pair_find(const gl_bpe *t, int32_t l, int32_t r) {
    uint64_t key = pair_key(l, r);
    for (size_t i = (size_t)mix64(key) & t->pair_mask;; i = (i + 1) & t->pair_mask) {
        const pair_slot *p = &t->pairs[i];
        if (p->key == key) return p;
        if (p->key == EMPTY_KEY) return NULL;
    }
}

static inline void pair_rank(const gl_bpe *t, int32_t l, int32_t r, uint32_t *rank, int32_t *id) {
    const pair_slot *p = pair_find(t, l, r);
    *rank = p ? p->rank : NO_RANK;
    *id = p ? p->id : -1;
}

/* Growable scratch memory of one encode call (only long pieces need it). */
typedef struct {
    int32_t *prev, *next;
    uint64_t *heap;
    size_t cap;
} scratch;

static int scratch_reserve(scratch *sc, size_t m) {
    if (m <= sc->cap) return 0;
    size_t cap = pow2_at_least(m);
    int32_t *p = realloc(sc->prev, cap * sizeof(int32_t));
    if (p) sc->prev = p;
    int32_t *q = realloc(sc->next, cap * sizeof(int32_t));
    if (q) sc->next = q;
    uint64_t *h = realloc(sc->heap, 3 * cap * sizeof(uint64_t));
    if (h) sc->heap = h;
    if (!p || !q || !h) return -1;
    sc->cap = cap;
    return 0;
}

static void scratch_free(scratch *sc) {
    free(sc->prev);
    free(sc->next);
    free(sc->heap);
}

#define SMALL_PIECE 128

/* Applies the merges to sym (m ids, m <= SMALL_PIECE) in place; returns the new length.
 * Each round merges the lowest-ranked adjacent pair (leftmost on ties): O(m^2), fastest for
 * the short pieces of ordinary text. */
static size_t merge_small(const gl_bpe *t, int32_t *sym, size_t m) {
    uint32_t rank[SMALL_PIECE];
    int32_t res[SMALL_PIECE];
    for (size_t i = 0; i + 1 < m; i++) pair_rank(t, sym[i], sym[i + 1], &rank[i], &res[i]);
    while (m > 1) {
        size_t k = 0;
        uint32_t best = rank[0];
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < best) {
                best = rank[i];
                k = i;
            }
        if (best == NO_RANK) break;
        sym[k] = res[k];
        /* drop sym[k+1] and the rank of the pair (sym[k+1], sym[k+2]) */
        memmove(sym + k + 1, sym + k + 2, (m - k - 2) * sizeof(int32_t));
        if (k + 3 <= m) {
            memmove(rank + k + 1, rank + k + 2, (m - k - 3) * sizeof(uint32_t));
            memmove(res + k + 1, res + k + 2, (m - k - 3) * sizeof(int32_t));
        }
        m--;
        if (k > 0) pair_rank(t, sym[k - 1], sym[k], &rank[k - 1], &res[k - 1]);
        if (k + 1 < m) pair_rank(t, sym[k], sym[k + 1], &rank[k], &res[k]);
    }
    return m;
}

static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0) h[i] = v;
    return top;
}

/* Same result as merge_small for any length, in O(m log m): the symbols form a linked list
 * and a min-heap holds (rank << 32 | position) of candidate pairs; entries made stale by an
 * earlier merge are recognised on pop and skipped. Returns the new length or -1 (memory). */
static ptrdiff_t merge_large(const gl_bpe *t, int32_t *sym, size_t m, scratch *sc) {
    if (scratch_reserve(sc, m) != 0) return -1;
    int32_t *prev = sc->prev, *next = sc->next;
    uint64_t *heap = sc->heap;
    size_t nh = 0;
    for (size_t i = 0; i < m; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
        const pair_slot *p = i + 1 < m ? pair_find(t, sym[i], sym[i + 1]) : NULL;
        if (p) heap_push(heap, &nh, ((uint64_t)p->rank << 32) | i);
    }
    while (nh > 0) {
        uint64_t e = heap_pop(heap, &nh);
        int32_t i = (int32_t)(uint32_t)e, j = next[i];
        if (sym[i] < 0 || j < 0) continue;
        const pair_slot *p = pair_find(t, sym[i], sym[j]);
        if (!p || p->rank != (uint32_t)(e >> 32)) continue; /* stale */
        sym[i] = p->id;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        if (prev[i] >= 0 && (p = pair_find(t, sym[prev[i]], sym[i])))
            heap_push(heap, &nh, ((uint64_t)p->rank << 32) | (uint32_t)prev[i]);
        if (next[i] >= 0 && (p = pair_find(t, sym[i], sym[next[i]])))
            heap_push(heap, &nh, ((uint64_t)p->rank << 32) | (uint32_t)i);
    }
    size_t w = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[w++] = sym[i];
    return (ptrdiff_t)w;
}

/* BPE of the bytes s[0:n] (n >= 1) into out (room for n ids), without the whole-piece
 * shortcut. Returns the number of ids or -1 (memory). */
static ptrdiff_t merge_bytes(const gl_bpe *t, int32_t *out, const uint8_t *s, size_t n,
                             scratch *sc) {
    for (size_t i = 0; i < n; i++) out[i] = t->byte_id[s[i]];
    if (n <= SMALL_PIECE) return (ptrdiff_t)merge_small(t, out, n);
    return merge_large(t, out, n, sc);
}

/* One piece: a piece that is itself a token (and that BPE would produce whole) is looked up
 * directly, as tiktoken does; otherwise the merges run. */
static inline ptrdiff_t encode_piece(const gl_bpe *t, int32_t *out, const uint8_t *s, size_t n,
                                     scratch *sc) {
    if (n == 1) {
        out[0] = t->byte_id[s[0]];
        return 1;
    }
    int32_t id = tok_find(t, s, n);
    if (id >= 0 && t->whole_ok[id]) {
        out[0] = id;
        return 1;
    }
    return merge_bytes(t, out, s, n, sc);
}

static ptrdiff_t encode_ordinary(const gl_bpe *t, int32_t *out, const uint8_t *s, size_t n,
                                 scratch *sc) {
    size_t k = 0, pos = 0;
    while (pos < n) {
        size_t end = piece_end(t->cls, s, n, pos);
        ptrdiff_t r = encode_piece(t, out + k, s + pos, end - pos, sc);
        if (r < 0) return -1;
        k += (size_t)r;
        pos = end;
    }
    return (ptrdiff_t)k;
}

/* First occurrence of needle (nn >= 1 bytes) in hay (hn bytes), or SIZE_MAX. */
static size_t find_bytes(const uint8_t *hay, size_t hn, const uint8_t *needle, size_t nn) {
    size_t i = 0;
    while (i + nn <= hn) {
        const uint8_t *p = memchr(hay + i, needle[0], hn - nn + 1 - i);
        if (!p) return SIZE_MAX;
        i = (size_t)(p - hay);
        if (memcmp(p, needle, nn) == 0) return i;
        i++;
    }
    return SIZE_MAX;
}

/* Splits text at the occurrences of the given special strings (earliest first, the longest
 * on a tie) and calls segment() on each ordinary stretch and special() on each match. */
typedef struct {
    const uint8_t *const *str;
    const size_t *len;
    int n;
} special_set;

typedef int (*segment_fn)(void *ctx, const uint8_t *s, size_t n);
typedef int (*special_fn)(void *ctx, int which);

static int split_specials(const special_set *sp, const uint8_t *text, size_t n, segment_fn seg,
                          special_fn spe, void *ctx) {
    if (sp->n == 0) return seg(ctx, text, n);
    size_t *nxt = malloc((size_t)sp->n * sizeof(size_t));
    if (!nxt) return -1;
    for (int a = 0; a < sp->n; a++) nxt[a] = find_bytes(text, n, sp->str[a], sp->len[a]);
    size_t pos = 0;
    int rc = 0;
    for (;;) {
        int best = -1;
        for (int a = 0; a < sp->n; a++)
            if (nxt[a] != SIZE_MAX &&
                (best < 0 || nxt[a] < nxt[best] ||
                 (nxt[a] == nxt[best] && sp->len[a] > sp->len[best])))
                best = a;
        if (best < 0) {
            rc = seg(ctx, text + pos, n - pos);
            break;
        }
        if ((rc = seg(ctx, text + pos, nxt[best] - pos)) != 0) break;
        if ((rc = spe(ctx, best)) != 0) break;
        pos = nxt[best] + sp->len[best];
        for (int a = 0; a < sp->n; a++)
            if (nxt[a] != SIZE_MAX && nxt[a] < pos) {
                size_t f = find_bytes(text + pos, n - pos, sp->str[a], sp->len[a]);
                nxt[a] = f == SIZE_MAX ? SIZE_MAX : pos + f;
            }
    }
    free(nxt);
    return rc;
}

typedef struct {
    const gl_bpe *t;
    int32_t *out;
    size_t k;
    const int32_t *special_ids;
    scratch sc;
} encode_ctx;

static int encode_segment(void *vctx, const uint8_t *s, size_t n) {
    encode_ctx *c = vctx;
    ptrdiff_t r = encode_ordinary(c->t, c->out + c->k, s, n, &c->sc);
    if (r < 0) return -1;
    c->k += (size_t)r;
    return 0;
}

static int encode_special(void *vctx, int which) {
    encode_ctx *c = vctx;
    c->out[c->k++] = c->special_ids[which];
    return 0;
}

ptrdiff_t gl_bpe_encode(const gl_bpe *t, int32_t *out, const uint8_t *text, size_t n,
                        const int32_t *allowed, int n_allowed) {
    if (n > (size_t)INT32_MAX) return -2;
    const uint8_t **str = NULL;
    size_t *len = NULL;
    if (n_allowed > 0) {
        str = malloc((size_t)n_allowed * sizeof(*str));
        len = malloc((size_t)n_allowed * sizeof(*len));
        if (!str || !len) {
            free(str);
            free(len);
            return -1;
        }
        for (int a = 0; a < n_allowed; a++) {
            str[a] = t->bytes + t->off[allowed[a]];
            len[a] = t->off[allowed[a] + 1] - t->off[allowed[a]];
        }
    }
    special_set sp = {str, len, n_allowed > 0 ? n_allowed : 0};
    encode_ctx c = {t, out, 0, allowed, {0}};
    int rc = split_specials(&sp, text, n, encode_segment, encode_special, &c);
    scratch_free(&c.sc);
    free(str);
    free(len);
    return rc != 0 ? -1 : (ptrdiff_t)c.k;
}

int gl_bpe_encode_batch(const gl_bpe *t, int32_t *out, size_t *counts, const size_t *out_off,
                        const uint8_t *const *texts, const size_t *lens, int n_texts,
                        const int32_t *allowed, int n_allowed) {
    int fail = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(| : fail)
    for (int i = 0; i < n_texts; i++) {
        ptrdiff_t r = gl_bpe_encode(t, out + out_off[i], texts[i], lens[i], allowed, n_allowed);
        if (r < 0) {
            fail |= 1;
            counts[i] = 0;
        } else {
            counts[i] = (size_t)r;
        }
    }
    return fail ? -1 : 0;
}

size_t gl_bpe_pretokenize(const gl_bpe *t, size_t *ends, const uint8_t *text, size_t n) {
    size_t k = 0;
    for (size_t pos = 0; pos < n; pos = ends[k++]) ends[k] = piece_end(t->cls, text, n, pos);
    return k;
}

size_t gl_bpe_decode(const gl_bpe *t, uint8_t *out, const int32_t *ids, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t a = t->off[ids[i]], len = t->off[ids[i] + 1] - a;
        if (out) memcpy(out + k, t->bytes + a, len);
        k += len;
    }
    return k;
}

int gl_bpe_vocab_size(const gl_bpe *t) { return t->n_vocab; }
int gl_bpe_num_merges(const gl_bpe *t) { return t->n_merges; }
const int32_t *gl_bpe_merges(const gl_bpe *t) { return t->merges; }
int gl_bpe_is_special(const gl_bpe *t, int id) {
    return id >= 0 && id < t->n_vocab && t->special[id];
}

const uint8_t *gl_bpe_token(const gl_bpe *t, int id, size_t *len) {
    *len = t->off[id + 1] - t->off[id];
    return t->bytes + t->off[id];
}

int32_t gl_bpe_token_id(const gl_bpe *t, const uint8_t *s, size_t n) {
    for (int a = 0; a < t->n_special; a++) {
        int32_t id = t->special_ids[a];
        if (t->off[id + 1] - t->off[id] == n && memcmp(t->bytes + t->off[id], s, n) == 0)
            return id;
    }
    return n > 0 ? tok_find(t, s, n) : -1;
}

void gl_bpe_free(gl_bpe *t) {
    if (!t) return;
    free(t->bytes);
    free(t->off);
    free(t->special);
    free(t->whole_ok);
    free(t->merges);
    free(t->special_ids);
    free(t->pairs);
    free(t->toks);
    free(t);
}

#define FAIL(...)                                   \
    do {                                            \
        if (err) snprintf(err, errlen, __VA_ARGS__); \
        gl_bpe_free(t);                             \
        return NULL;                                \
    } while (0)

gl_bpe *gl_bpe_new(int n_vocab, const uint8_t *bytes, const int32_t *off, const int32_t *special,
                   int n_merges, const int32_t *merges, char *err, size_t errlen) {
    gl_bpe *t = calloc(1, sizeof(gl_bpe));
    if (!t) FAIL("out of memory");
    if (n_vocab < 256) FAIL("expected at least 256 tokens (one per byte), got %d", n_vocab);
    if (n_merges < 0) FAIL("expected a non-negative number of merges, got %d", n_merges);
    if (off[0] != 0) FAIL("token offsets must start at 0");
    for (int i = 0; i < n_vocab; i++) {
        if (off[i + 1] <= off[i]) FAIL("token %d is empty (or offsets decrease)", i);
        if (special[i] != 0 && special[i] != 1) FAIL("special flags must be 0 or 1");
    }
    size_t nb = (size_t)off[n_vocab];
    t->n_vocab = n_vocab;
    t->bytes = malloc(nb);
    t->off = malloc(((size_t)n_vocab + 1) * sizeof(size_t));
    t->special = malloc((size_t)n_vocab);
    t->whole_ok = calloc((size_t)n_vocab, 1);
    t->merges = malloc(((size_t)n_merges * 2 + 1) * sizeof(int32_t));
    t->special_ids = malloc((size_t)n_vocab * sizeof(int32_t));
    t->tok_mask = pow2_at_least(2 * (size_t)n_vocab) - 1;
    t->toks = malloc((t->tok_mask + 1) * sizeof(tok_slot));
    t->pair_mask = pow2_at_least(2 * (size_t)n_merges) - 1;
    t->pairs = malloc((t->pair_mask + 1) * sizeof(pair_slot));
    if (!t->bytes || !t->off || !t->special || !t->whole_ok || !t->merges || !t->special_ids ||
        !t->toks || !t->pairs)
        FAIL("out of memory");
    memcpy(t->bytes, bytes, nb);
    for (int i = 0; i <= n_vocab; i++) t->off[i] = (size_t)off[i];
    for (size_t i = 0; i <= t->tok_mask; i++) t->toks[i].id = -1;
    for (size_t i = 0; i <= t->pair_mask; i++) t->pairs[i].key = EMPTY_KEY;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    class_table_build(t->cls);

    /* ordinary tokens: unique bytes; specials: unique among themselves */
    for (int id = 0; id < n_vocab; id++) {
        const uint8_t *s = t->bytes + t->off[id];
        size_t n = t->off[id + 1] - t->off[id];
        t->special[id] = (uint8_t)special[id];
        if (special[id]) {
            for (int a = 0; a < t->n_special; a++) {
                int32_t o = t->special_ids[a];
                if (t->off[o + 1] - t->off[o] == n && memcmp(t->bytes + t->off[o], s, n) == 0)
                    FAIL("special tokens %d and %d have the same text", o, id);
            }
            t->special_ids[t->n_special++] = id;
            continue;
        }
        int32_t dup = tok_find(t, s, n);
        if (dup >= 0) FAIL("tokens %d and %d have the same bytes", dup, id);
        uint64_t h = hash_bytes(s, n);
        size_t i = (size_t)h & t->tok_mask;
        while (t->toks[i].id >= 0) i = (i + 1) & t->tok_mask;
        t->toks[i].hash = h;
        t->toks[i].id = id;
        if (n == 1) t->byte_id[s[0]] = id;
    }
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0) FAIL("no ordinary token for the byte 0x%02X", b);

    /* merges: (left, right) -> the token whose bytes are left's followed by right's */
    uint8_t *cat = NULL;
    for (int r = 0; r < n_merges; r++) {
        int32_t l = merges[2 * r], rr = merges[2 * r + 1];
        if (l < 0 || l >= n_vocab || rr < 0 || rr >= n_vocab)
            FAIL("merge %d: token id (%d, %d) out of range [0, %d)", r, l, rr, n_vocab);
        if (special[l] || special[rr]) FAIL("merge %d: (%d, %d) uses a special token", r, l, rr);
        size_t nl = t->off[l + 1] - t->off[l], nr = t->off[rr + 1] - t->off[rr];
        uint8_t *c2 = realloc(cat, nl + nr);
        if (!c2) {
            free(cat);
            FAIL("out of memory");
        }
        cat = c2;
        memcpy(cat, t->bytes + t->off[l], nl);
        memcpy(cat + nl, t->bytes + t->off[rr], nr);
        int32_t id = tok_find(t, cat, nl + nr);
        if (id < 0) {
            free(cat);
            FAIL("merge %d: the result of (%d, %d) is not in the vocabulary", r, l, rr);
        }
        uint64_t key = pair_key(l, rr);
        size_t i = (size_t)mix64(key) & t->pair_mask;
        while (t->pairs[i].key != EMPTY_KEY && t->pairs[i].key != key) i = (i + 1) & t->pair_mask;
        if (t->pairs[i].key == key) {
            free(cat);
            FAIL("merge %d: the pair (%d, %d) is listed twice", r, l, rr);
        }
        t->pairs[i].key = key;
        t->pairs[i].rank = (uint32_t)r;
        t->pairs[i].id = id;
        t->merges[2 * r] = l;
        t->merges[2 * r + 1] = rr;
    }
    free(cat);
    t->n_merges = n_merges;

    /* The whole-piece shortcut is exact only for tokens that BPE rebuilds from their bytes
     * (true of every token of a trained vocabulary; checked, not assumed). */
    size_t maxlen = 1;
    for (int id = 0; id < n_vocab; id++)
        if (t->off[id + 1] - t->off[id] > maxlen) maxlen = t->off[id + 1] - t->off[id];
    int32_t *buf = malloc(maxlen * sizeof(int32_t));
    scratch sc = {0};
    if (!buf) FAIL("out of memory");
    for (int id = 0; id < n_vocab; id++) {
        if (t->special[id]) continue;
        size_t n = t->off[id + 1] - t->off[id];
        ptrdiff_t r = merge_bytes(t, buf, t->bytes + t->off[id], n, &sc);
        if (r < 0) {
            free(buf);
            scratch_free(&sc);
            FAIL("out of memory");
        }
        t->whole_ok[id] = (r == 1 && buf[0] == id);
    }
    free(buf);
    scratch_free(&sc);
    return t;
}
#undef FAIL

/* ---- training -------------------------------------------------------------------------- */

/* A growable hash map from byte strings (stored elsewhere, found through off/len arrays)
 * to int32 indices. */
typedef struct {
    uint64_t h;
    int32_t v; /* -1 when free */
} bslot;

typedef struct {
    bslot *s;
    size_t mask, n;
} bmap;

static int bmap_init(bmap *m, size_t cap) {
    m->mask = pow2_at_least(cap) - 1;
    m->n = 0;
    m->s = malloc((m->mask + 1) * sizeof(bslot));
    if (!m->s) return -1;
    for (size_t i = 0; i <= m->mask; i++) m->s[i].v = -1;
    return 0;
}

static int32_t bmap_find(const bmap *m, uint64_t h, const uint8_t *s, size_t n,
                         const uint8_t *base, const size_t *off, const size_t *len) {
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        int32_t v = m->s[i].v;
        if (v < 0) return -1;
        if (m->s[i].h == h && len[v] == n && memcmp(base + off[v], s, n) == 0) return v;
    }
}

static int bmap_add(bmap *m, uint64_t h, int32_t v) {
    if (2 * (m->n + 1) > m->mask + 1) {
        bmap g;
        if (bmap_init(&g, 2 * (m->mask + 1)) != 0) return -1;
        for (size_t i = 0; i <= m->mask; i++)
            if (m->s[i].v >= 0) {
                size_t j = (size_t)m->s[i].h & g.mask;
                while (g.s[j].v >= 0) j = (j + 1) & g.mask;
                g.s[j] = m->s[i];
            }
        g.n = m->n;
        free(m->s);
        *m = g;
    }
    size_t i = (size_t)h & m->mask;
    while (m->s[i].v >= 0) i = (i + 1) & m->mask;
    m->s[i].h = h;
    m->s[i].v = v;
    m->n++;
    return 0;
}

/* Grows *p (an array of *cap elements of size sz) to hold at least n elements. */
static int grow(void **p, size_t *cap, size_t n, size_t sz) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n) c *= 2;
    void *q = realloc(*p, c * sz);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

struct gl_bpe_trainer {
    int n_special;
    uint8_t **sp_str;
    size_t *sp_len;
    /* the distinct pieces of the corpus: bytes arena[w_off[w] : w_off[w] + w_len[w]],
     * seen w_count[w] times */
    uint8_t *arena;
    size_t arena_n, arena_cap;
    size_t *w_off, *w_len;
    int64_t *w_count;
    size_t n_words, w_cap, w_len_cap, w_count_cap;
    bmap words;
    uint8_t cls[65536];
};

void gl_bpe_trainer_free(gl_bpe_trainer *tr) {
    if (!tr) return;
    for (int a = 0; a < tr->n_special; a++) free(tr->sp_str[a]);
    free(tr->sp_str);
    free(tr->sp_len);
    free(tr->arena);
    free(tr->w_off);
    free(tr->w_len);
    free(tr->w_count);
    free(tr->words.s);
    free(tr);
}

gl_bpe_trainer *gl_bpe_trainer_new(int n_special, const uint8_t *const *special,
                                   const size_t *special_len) {
    gl_bpe_trainer *tr = calloc(1, sizeof(gl_bpe_trainer));
    if (!tr) return NULL;
    class_table_build(tr->cls);
    if (bmap_init(&tr->words, 1024) != 0) goto fail;
    if (n_special > 0) {
        tr->sp_str = calloc((size_t)n_special, sizeof(uint8_t *));
        tr->sp_len = calloc((size_t)n_special, sizeof(size_t));
        if (!tr->sp_str || !tr->sp_len) goto fail;
        for (int a = 0; a < n_special; a++) {
            tr->sp_str[a] = malloc(special_len[a] ? special_len[a] : 1);
            if (!tr->sp_str[a]) goto fail;
            tr->n_special = a + 1;
            memcpy(tr->sp_str[a], special[a], special_len[a]);
            tr->sp_len[a] = special_len[a];
        }
    }
    return tr;
fail:
    gl_bpe_trainer_free(tr);
    return NULL;
}

static int count_piece(gl_bpe_trainer *tr, const uint8_t *s, size_t n) {
    uint64_t h = hash_bytes(s, n);
    int32_t w = bmap_find(&tr->words, h, s, n, tr->arena, tr->w_off, tr->w_len);
    if (w >= 0) {
        tr->w_count[w]++;
        return 0;
    }
    if (tr->n_words >= (size_t)INT32_MAX) return -1;
    if (grow((void **)&tr->arena, &tr->arena_cap, tr->arena_n + n, 1) ||
        grow((void **)&tr->w_off, &tr->w_cap, tr->n_words + 1, sizeof(size_t)) ||
        grow((void **)&tr->w_len, &tr->w_len_cap, tr->n_words + 1, sizeof(size_t)) ||
        grow((void **)&tr->w_count, &tr->w_count_cap, tr->n_words + 1, sizeof(int64_t)))
        return -1;
    memcpy(tr->arena + tr->arena_n, s, n);
    tr->w_off[tr->n_words] = tr->arena_n;
    tr->w_len[tr->n_words] = n;
    tr->w_count[tr->n_words] = 1;
    tr->arena_n += n;
    if (bmap_add(&tr->words, h, (int32_t)tr->n_words) != 0) return -1;
    tr->n_words++;
    return 0;
}

static int count_segment(void *ctx, const uint8_t *s, size_t n) {
    gl_bpe_trainer *tr = ctx;
    for (size_t pos = 0; pos < n;) {
        size_t end = piece_end(tr->cls, s, n, pos);
        if (count_piece(tr, s + pos, end - pos) != 0) return -1;
        pos = end;
    }
    return 0;
}

static int skip_special(void *ctx, int which) {
    (void)ctx;
    (void)which;
    return 0;
}

int gl_bpe_trainer_feed(gl_bpe_trainer *tr, const uint8_t *text, size_t n) {
    special_set sp = {(const uint8_t *const *)tr->sp_str, tr->sp_len, tr->n_special};
    return split_specials(&sp, text, n, count_segment, skip_special, tr);
}

/* Pair statistics of training: for each adjacent pair (left, right) that ever occurred, its
 * count in the corpus and the words it occurs in (a superset: stale entries are skipped). */
typedef struct {
    uint64_t *key;
    int64_t *count;
    int32_t **occ;
    uint32_t *occ_n, *occ_cap, *stamp;
    size_t n, cap;
    int32_t *slot; /* open addressing: pair index, -1 when free */
    size_t mask;
} pair_table;

static void pt_free(pair_table *pt) {
    for (size_t q = 0; q < pt->n; q++) free(pt->occ[q]);
    free(pt->key);
    free(pt->count);
    free(pt->occ);
    free(pt->occ_n);
    free(pt->occ_cap);
    free(pt->stamp);
    free(pt->slot);
}

static int32_t pt_find(const pair_table *pt, uint64_t key) {
    if (!pt->slot) return -1;
    for (size_t i = (size_t)mix64(key) & pt->mask;; i = (i + 1) & pt->mask) {
        int32_t q = pt->slot[i];
        if (q < 0 || pt->key[q] == key) return q;
    }
}

static int32_t pt_insert(pair_table *pt, uint64_t key) {
    if (pt->n + 1 > pt->cap) {
        size_t c = pt->cap ? 2 * pt->cap : 1024;
        void *p[6] = {realloc(pt->key, c * sizeof(uint64_t)), NULL, NULL, NULL, NULL, NULL};
        if (p[0]) pt->key = p[0];
        if ((p[1] = realloc(pt->count, c * sizeof(int64_t)))) pt->count = p[1];
        if ((p[2] = realloc(pt->occ, c * sizeof(int32_t *)))) pt->occ = p[2];
        if ((p[3] = realloc(pt->occ_n, c * sizeof(uint32_t)))) pt->occ_n = p[3];
        if ((p[4] = realloc(pt->occ_cap, c * sizeof(uint32_t)))) pt->occ_cap = p[4];
        if ((p[5] = realloc(pt->stamp, c * sizeof(uint32_t)))) pt->stamp = p[5];
        for (int k = 0; k < 6; k++)
            if (!p[k]) return -1;
        pt->cap = c;
    }
    if (2 * (pt->n + 1) > pt->mask + 1) {
        size_t m = pt->mask ? 2 * (pt->mask + 1) : 2048;
        int32_t *s = malloc(m * sizeof(int32_t));
        if (!s) return -1;
        for (size_t i = 0; i < m; i++) s[i] = -1;
        for (size_t q = 0; q < pt->n; q++) {
            size_t i = (size_t)mix64(pt->key[q]) & (m - 1);
            while (s[i] >= 0) i = (i + 1) & (m - 1);
            s[i] = (int32_t)q;
        }
        free(pt->slot);
        pt->slot = s;
        pt->mask = m - 1;
    }
    size_t i = (size_t)mix64(key) & pt->mask;
    while (pt->slot[i] >= 0) i = (i + 1) & pt->mask;
    int32_t q = (int32_t)pt->n++;
    pt->slot[i] = q;
    pt->key[q] = key;
    pt->count[q] = 0;
    pt->occ[q] = NULL;
    pt->occ_n[q] = pt->occ_cap[q] = 0;
    pt->stamp[q] = 0;
    return q;
}

/* Records that word w holds the pair q (once per word: consecutive duplicates are skipped). */
static int pt_occ_add(pair_table *pt, int32_t q, int32_t w) {
    if (pt->occ_n[q] > 0 && pt->occ[q][pt->occ_n[q] - 1] == w) return 0;
    if (pt->occ_n[q] == pt->occ_cap[q]) {
        uint32_t c = pt->occ_cap[q] ? 2 * pt->occ_cap[q] : 4;
        int32_t *o = realloc(pt->occ[q], c * sizeof(int32_t));
        if (!o) return -1;
        pt->occ[q] = o;
        pt->occ_cap[q] = c;
    }
    pt->occ[q][pt->occ_n[q]++] = w;
    return 0;
}

/* Max-heap of (count, pair): the most frequent first, the smallest pair key on ties. */
typedef struct {
    int64_t count;
    uint64_t key;
} heap_entry;

static inline int before(heap_entry a, heap_entry b) {
    return a.count > b.count || (a.count == b.count && a.key < b.key);
}

static int hpush(heap_entry **h, size_t *n, size_t *cap, heap_entry e) {
    if (grow((void **)h, cap, *n + 1, sizeof(heap_entry)) != 0) return -1;
    size_t i = (*n)++;
    while (i > 0 && before(e, (*h)[(i - 1) / 2])) {
        (*h)[i] = (*h)[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    (*h)[i] = e;
    return 0;
}

static heap_entry hpop(heap_entry *h, size_t *n) {
    heap_entry top = h[0], e = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && before(h[c + 1], h[c])) c++;
        if (!before(h[c], e)) break;
        h[i] = h[c];
        i = c;
    }
    if (m > 0) h[i] = e;
    return top;
}

/* State of one training run. */
typedef struct {
    pair_table pt;
    int32_t *touched; /* pairs whose count grew during the current merge */
    size_t n_touched, touched_cap;
    uint32_t stamp;
} merge_state;

/* count[(l, r)] += delta; when delta > 0 the pair is new (it contains the merged token):
 * remember that word w holds it and that it must go (back) into the heap. */
static int pair_add(merge_state *ms, int32_t l, int32_t r, int64_t delta, int32_t w) {
    pair_table *pt = &ms->pt;
    uint64_t key = pair_key(l, r);
    int32_t q = pt_find(pt, key);
    if (delta < 0) {
        if (q >= 0) pt->count[q] += delta;
        return 0;
    }
    if (q < 0 && (q = pt_insert(pt, key)) < 0) return -1;
    pt->count[q] += delta;
    if (pt_occ_add(pt, q, w) != 0) return -1;
    if (pt->stamp[q] != ms->stamp) {
        pt->stamp[q] = ms->stamp;
        if (grow((void **)&ms->touched, &ms->touched_cap, ms->n_touched + 1, sizeof(int32_t)))
            return -1;
        ms->touched[ms->n_touched++] = q;
    }
    return 0;
}

/* Replaces every (l, r) in word s (*n symbols, seen c times) by z, left to right, updating the
 * counts of the neighbouring pairs: (x, l) -> (x, z) and (r, y) -> (z, y). */
static int merge_word(merge_state *ms, int32_t *s, size_t *n, int64_t c, int32_t w, int32_t l,
                      int32_t r, int32_t z) {
    size_t i = 0, j = 0, m = *n;
    while (i < m) {
        if (i + 1 < m && s[i] == l && s[i + 1] == r) {
            if (j > 0 && (pair_add(ms, s[j - 1], l, -c, w) || pair_add(ms, s[j - 1], z, c, w)))
                return -1;
            if (i + 2 < m && (pair_add(ms, r, s[i + 2], -c, w) || pair_add(ms, z, s[i + 2], c, w)))
                return -1;
            s[j++] = z;
            i += 2;
        } else {
            s[j++] = s[i++];
        }
    }
    *n = j;
    return 0;
}

gl_bpe *gl_bpe_trainer_train(gl_bpe_trainer *tr, int vocab_size, char *err, size_t errlen) {
    int target = vocab_size - tr->n_special; /* ordinary tokens: 256 bytes + merges */
    if (target < 256) {
        snprintf(err, errlen, "vocab_size must be at least 256 + %d special tokens, got %d",
                 tr->n_special, vocab_size);
        return NULL;
    }
    gl_bpe *result = NULL;
    merge_state ms = {0};
    size_t nw = tr->n_words;
    int32_t *sym = malloc((tr->arena_n + 1) * sizeof(int32_t));
    size_t *wl = malloc((nw + 1) * sizeof(size_t));
    uint32_t *wstamp = calloc(nw + 1, sizeof(uint32_t));
    /* the tokens: bytes tb[toff[id] : toff[id] + tlen[id]] */
    uint8_t *tb = NULL, *cat = NULL;
    size_t *toff = NULL, *tlen = NULL, tb_cap = 0, toff_cap = 0, tlen_cap = 0, cat_cap = 0;
    size_t tb_n = 0;
    int32_t n_tok = 0, *merges = NULL, *blob_off = NULL, *flags = NULL;
    size_t n_merges = 0, merges_cap = 0;
    heap_entry *heap = NULL;
    size_t nh = 0, heap_cap = 0;
    bmap tokmap = {0};
    uint8_t *blob = NULL;
    snprintf(err, errlen, "out of memory");
    if (!sym || !wl || !wstamp || bmap_init(&tokmap, 1024) != 0) goto done;
    for (size_t k = 0; k < tr->arena_n; k++) sym[k] = tr->arena[k];
    if (nw > 0) memcpy(wl, tr->w_len, nw * sizeof(size_t));
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if (grow((void **)&tb, &tb_cap, tb_n + 1, 1) ||
            grow((void **)&toff, &toff_cap, (size_t)n_tok + 1, sizeof(size_t)) ||
            grow((void **)&tlen, &tlen_cap, (size_t)n_tok + 1, sizeof(size_t)) ||
            bmap_add(&tokmap, hash_bytes(&byte, 1), n_tok))
            goto done;
        tb[tb_n] = byte;
        toff[n_tok] = tb_n++;
        tlen[n_tok++] = 1;
    }
    /* initial pair counts */
    for (size_t w = 0; w < nw; w++) {
        const int32_t *s = sym + tr->w_off[w];
        for (size_t k = 0; k + 1 < wl[w]; k++) {
            uint64_t key = pair_key(s[k], s[k + 1]);
            int32_t q = pt_find(&ms.pt, key);
            if (q < 0 && (q = pt_insert(&ms.pt, key)) < 0) goto done;
            ms.pt.count[q] += tr->w_count[w];
            if (pt_occ_add(&ms.pt, q, (int32_t)w) != 0) goto done;
        }
    }
    for (size_t q = 0; q < ms.pt.n; q++) {
        heap_entry e = {ms.pt.count[q], ms.pt.key[q]};
        if (hpush(&heap, &nh, &heap_cap, e) != 0) goto done;
    }
    /* merge the most frequent pair until the vocabulary is full or no pair is left.
     * Heap entries may hold stale (too high) counts; one whose count is current is the max. */
    while (n_tok < target && nh > 0) {
        heap_entry e = hpop(heap, &nh);
        int32_t q = pt_find(&ms.pt, e.key);
        int64_t cur = ms.pt.count[q];
        if (cur != e.count) {
            heap_entry f = {cur, e.key};
            if (cur > 0 && hpush(&heap, &nh, &heap_cap, f) != 0) goto done;
            continue;
        }
        if (cur <= 0) continue;
        int32_t l = (int32_t)(e.key >> 32), r = (int32_t)(uint32_t)e.key;
        size_t n = tlen[l] + tlen[r];
        if (grow((void **)&cat, &cat_cap, n, 1)) goto done;
        memcpy(cat, tb + toff[l], tlen[l]);
        memcpy(cat + tlen[l], tb + toff[r], tlen[r]);
        uint64_t h = hash_bytes(cat, n);
        int32_t z = bmap_find(&tokmap, h, cat, n, tb, toff, tlen);
        if (z < 0) { /* a new token (else an existing one is reached another way) */
            if (grow((void **)&tb, &tb_cap, tb_n + n, 1) ||
                grow((void **)&toff, &toff_cap, (size_t)n_tok + 1, sizeof(size_t)) ||
                grow((void **)&tlen, &tlen_cap, (size_t)n_tok + 1, sizeof(size_t)) ||
                bmap_add(&tokmap, h, n_tok))
                goto done;
            memcpy(tb + tb_n, cat, n);
            toff[n_tok] = tb_n;
            tlen[n_tok] = n;
            tb_n += n;
            z = n_tok++;
        }
        if (grow((void **)&merges, &merges_cap, 2 * n_merges + 2, sizeof(int32_t))) goto done;
        merges[2 * n_merges] = l;
        merges[2 * n_merges + 1] = r;
        n_merges++;
        ms.stamp++;
        ms.n_touched = 0;
        /* no pair containing z existed before, so (l, r)'s list is not appended to below */
        int32_t *occ = ms.pt.occ[q];
        uint32_t n_occ = ms.pt.occ_n[q];
        for (uint32_t k = 0; k < n_occ; k++) {
            int32_t w = occ[k];
            if (wstamp[w] == ms.stamp) continue;
            wstamp[w] = ms.stamp;
            if (merge_word(&ms, sym + tr->w_off[w], &wl[w], tr->w_count[w], w, l, r, z) != 0)
                goto done;
        }
        free(ms.pt.occ[q]);
        ms.pt.occ[q] = NULL;
        ms.pt.occ_n[q] = ms.pt.occ_cap[q] = 0;
        ms.pt.count[q] = 0;
        for (size_t k = 0; k < ms.n_touched; k++) {
            int32_t t2 = ms.touched[k];
            heap_entry f = {ms.pt.count[t2], ms.pt.key[t2]};
            if (f.count > 0 && hpush(&heap, &nh, &heap_cap, f) != 0) goto done;
        }
    }
    /* the vocabulary: ordinary tokens, then the special tokens */
    int nv = n_tok + tr->n_special;
    size_t total = tb_n;
    for (int a = 0; a < tr->n_special; a++) total += tr->sp_len[a];
    if (total > (size_t)INT32_MAX || n_merges > (size_t)INT32_MAX) {
        snprintf(err, errlen, "the vocabulary is too large");
        goto done;
    }
    blob = malloc(total + 1);
    blob_off = malloc(((size_t)nv + 1) * sizeof(int32_t));
    flags = calloc((size_t)nv, sizeof(int32_t));
    if (!blob || !blob_off || !flags) goto done;
    memcpy(blob, tb, tb_n);
    for (int id = 0; id < n_tok; id++) blob_off[id] = (int32_t)toff[id];
    size_t pos = tb_n;
    for (int a = 0; a < tr->n_special; a++) {
        blob_off[n_tok + a] = (int32_t)pos;
        memcpy(blob + pos, tr->sp_str[a], tr->sp_len[a]);
        pos += tr->sp_len[a];
        flags[n_tok + a] = 1;
    }
    blob_off[nv] = (int32_t)pos;
    result = gl_bpe_new(nv, blob, blob_off, flags, (int)n_merges, merges, err, errlen);
done:
    pt_free(&ms.pt);
    free(ms.touched);
    free(sym);
    free(wl);
    free(wstamp);
    free(tb);
    free(cat);
    free(toff);
    free(tlen);
    free(merges);
    free(heap);
    free(tokmap.s);
    free(blob);
    free(blob_off);
    free(flags);
    return result;
}
