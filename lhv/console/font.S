/* The 8x16 font used on the UEFI framebuffer and for the large verdict letters; generated at
 * build time (tools/mkfont.py) and also written to images/ so the harness decodes screen dumps
 * with the very same glyphs. */
    .section .rodata
    .global lhv_font8x16
    .align 16
lhv_font8x16:
    .incbin FONT_FILE
