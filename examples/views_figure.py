"""The figure of docs/methods.md: digits at 28×28 (normalized), two draws each of the weak and the strong
view, seed 0. Run: .venv/bin/python examples/views_figure.py docs/figures/views-digits28.png"""

import sys

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssl_bench.augment import augmentation  # noqa: E402
from ssl_bench.data import get_dataset  # noqa: E402

x = get_dataset("digits").load(size=28).x_train[:8].float()
x = (x - x.mean()) / x.std()  # (8, 1, 28, 28), as the harness normalizes
rows = [("original", x)]
for strength in ("weak", "strong"):
    gen = torch.Generator().manual_seed(0)
    augment = augmentation("image", strength)
    rows += [(strength, augment(x, gen)), (f"{strength} (2nd draw)", augment(x, gen))]
fig, axes = plt.subplots(len(rows), 8, figsize=(8, 1.1 * len(rows)))
for r, (name, images) in enumerate(rows):
    for c in range(8):
        axes[r, c].imshow(images[c, 0], cmap="gray", vmin=float(x.min()), vmax=float(x.max()))
        axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
    axes[r, 0].set_ylabel(name, fontsize=7)
fig.suptitle("digits at 28×28 (normalized): weak and strong views, two draws each (seed 0)", fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[1] if len(sys.argv) > 1 else "views-digits28.png", dpi=90)
