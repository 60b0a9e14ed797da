/* QR code encoder for the final screen (console/qr.c). */
#ifndef LHV_QR_H
#define LHV_QR_H

#include "lib/lib.h"

#define QR_MAX_VERSION 40
#define QR_MAX_SIZE (QR_MAX_VERSION * 4 + 17)

/* Encodes len bytes in the smallest symbol up to max_version (level M if it fits, else L).
 * Returns the symbol's width in modules, 0 if the text does not fit. */
int qr_encode(const char *text, int len, int max_version);
/* The most bytes a symbol of max_version can hold (level L). */
int qr_capacity(int max_version);
/* Module (x, y) of the last symbol encoded: true when dark. Outside the symbol: light. */
bool qr_module(int x, int y);

#endif
