/* UTF-8 well-formedness for text read from files that promise it (GGUF's
 * strings) before it is kept or written into JSON, which would drop it. */
#include "base.h"

int mopt_utf8_text(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        const unsigned c = *p++;
        if (c == 0) return 0;
        if (c < 0x80) continue;
        size_t k;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07, min = 0x10000;
        else return 0; /* a continuation byte first, or a lead byte no code point uses */
        if ((size_t)(end - p) < k) return 0;
        for (size_t i = 0; i < k; i++, p++) {
            if ((*p & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (*p & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0; /* overlong, too big, a surrogate */
    }
    return 1;
}
