"""Constants of the retina plugin with one owner each (a leaf module: it imports nothing)."""

#: micrometres per stimulus pixel: the Baccus-lab recordings (``scale_factor = 55``; openretina says
#: 50), the synthetic retina drawn on the same grid, and the size assumed for a model declaring none
PIXEL_UM = 55.0
