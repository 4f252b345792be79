"""Referable diabetic-retinopathy screening from image-level labels, with lesion heatmaps.

Seed: deep-image-mining-retinopathy-heatmaps.txt (hue-constrained sensitivity eq. (3), the
sparsity-enhanced training eq. (6), net B / AlexNet of Sec. 5.1, FROC of Sec. 5.5, checkpoint
ensemble of Sec. 5.6)."""
