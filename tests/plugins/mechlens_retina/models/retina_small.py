"""A small random-weight retina-cnn variant shared by the retina tests (fast on CPU)."""

SMALL = dict(
    checkpoint="random",
    history=5,
    image_size=12,
    channels1=3,
    kernel1=5,
    channels2=2,
    kernel2=3,
    n_cells=3,
    device="cpu",
)
