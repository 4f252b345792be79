"""``proxscope seg``: noise-robust semantic segmentation with a TV-regularized softmax
(UNet/RUNet, SegNet/RSegNet; seed tv-regularized-softmax-segmentation.txt)."""
