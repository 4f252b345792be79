"""The retina section of ``proxscope demo``: a simulated photograph (with its lesion outlines)
and the real fundus photograph scikit-image ships, each with its referral probability and the
heatmaps of the four criteria side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base import DemoResult
from .predict import load_model, predict_photo

#: (panel title, bundled model, heatmap method)
PANELS = (("sensitivity (eq. 2)", "retina-plain", "sensitivity"),
          ("hue-constrained (eq. 3)", "retina-plain", "hue"),
          ("hue + sparsity-enhanced (eq. 6)", "retina", "hue"),
          ("LRP", "retina-plain", "lrp"))
DEMO_SEED = 3


def _simulated_photo() -> tuple[np.ndarray, np.ndarray, int]:
    """A referable simulated photograph (the first of the seeded draws with grade >= 2)."""
    from ...sim.fundus import FundusConfig, simulate

    for i in range(50):
        sample = simulate(FundusConfig(size=512), np.random.default_rng([DEMO_SEED, i]))
        if sample.referable and len({lesion.kind for lesion in sample.lesions}) >= 3:
            return sample.image, sample.mask, sample.grade
    raise RuntimeError("no referable simulated photograph in 50 draws")


def run_demo(out: Path, quiet: bool = False) -> DemoResult:
    import matplotlib.pyplot as plt
    import skimage.data
    from skimage.measure import label
    from skimage.segmentation import find_boundaries

    from ...metrics.detection import LESION_NAMES
    from ...report import save_figure

    sim, mask, grade = _simulated_photo()
    photos = {f"simulated (grade {grade})": sim, "real (scikit-image retina)": skimage.data.retina()}
    nets = {name: load_model(name)[0] for name in {p[1] for p in PANELS}}
    columns = len(PANELS) + 1
    fig, axes = plt.subplots(len(photos), columns, figsize=(3.2 * columns, 3.4 * len(photos)))
    metrics = {}
    for row, (title, photo) in zip(axes, photos.items(), strict=True):
        p = None
        for ax, (panel, net, method) in zip(row[1:], PANELS, strict=True):
            prob, heatmap = predict_photo(nets[net], photo, method)
            p = prob if net == "retina" else p
            top = np.percentile(heatmap[heatmap > 0], 99.5) if (heatmap > 0).any() else 1.0
            ax.imshow(np.clip(heatmap / top, 0, 1), cmap="hot")
            ax.set_title(panel, fontsize=9)
        metrics[f"referable probability, {title}"] = round(p, 3)
        row[0].imshow(photo)
        if title.startswith("simulated"):
            outline = np.zeros((*mask.shape, 4))
            outline[find_boundaries(mask > 0)] = (0, 1, 1, 1)
            row[0].imshow(outline)
        row[0].set_title(f"{title}\np(referable) = {p:.2f}", fontsize=9)
        for ax in row:
            ax.set_axis_off()
    figure = save_figure(fig, Path(out) / "retina_heatmaps.png")
    counts = {name: int(label(mask == k).max()) for k, name in LESION_NAMES.items()}
    metrics |= {f"simulated {k} lesions": v for k, v in counts.items()}
    return DemoResult(
        title="retina: referable-DR screening with lesion heatmaps",
        text="Bundled net B (trained on simulated photographs with image-level referral labels "
             "only; 'retina' with the sparsity penalty nu = 1e-3, 'retina-plain' without) on a "
             "simulated photograph (lesion outlines in cyan) and the real fundus photograph "
             "shipped with scikit-image. Heatmaps: bright = pixels the referral score depends on.",
        metrics=metrics, figures=[figure])
