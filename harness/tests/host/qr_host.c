/* The image's QR encoder (lhv/console/qr.c) built for the host, so a test can decode what it
 * draws: reads the text from stdin, writes the symbol as rows of '#' (dark) and '.' (light).
 * Usage: qr_host MAX_VERSION < text */
#include <stdio.h>
#include <stdlib.h>

#include "console/qr.h"

int main(int argc, char **argv)
{
    static char text[8192];
    int len = (int)fread(text, 1, sizeof(text), stdin);
    int size = qr_encode(text, len, argc > 1 ? atoi(argv[1]) : QR_MAX_VERSION);
    if (!size) {
        fprintf(stderr, "text of %d bytes does not fit (capacity %d)\n", len, qr_capacity(QR_MAX_VERSION));
        return 1;
    }
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++)
            putchar(qr_module(x, y) ? '#' : '.');
        putchar('\n');
    }
    return 0;
}
