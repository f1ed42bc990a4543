"""The names of what runs report to Tune and record in MLflow, defined once.

A metric's name says what it is: `val/` on the validation cases, `train/` over the steps since the
last report, `time/` in seconds.
"""

PSNR = "val/psnr"  # PSNR inside the brain mask (dB): what the search ranks by
PSNR_WHOLE = "val/psnr_whole"  # over the whole region
SSIM = "val/ssim"  # 3D SSIM inside the brain mask
VAL_SECONDS = "val/seconds"  # the super-resolution of the cases alone
LR_G = "train/lr_g"
PATCHES_PER_S = "train/patches_per_s"
ELAPSED = "time/elapsed_s"  # the training loop's wall time
STARTUP = "time/startup_s"  # from the trial's start to its first training step
FIRST_BATCH = "time/first_batch_s"
DATA_WAIT = "time/data_wait_s"  # the loop waiting for patches
RECORDED = ("train/", "val/", "time/")  # the prefixes MLflow records per evaluation
