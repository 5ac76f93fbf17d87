"""The classical pipeline's kernels: SSIM, color histograms, keypoint matching and their fusion."""
