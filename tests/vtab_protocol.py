"""The VTAB-1k protocol per task, written down from its sources and not from the package's code,
for the tests to hold the registry, the transforms and the VTAB runner against.

- Random crop and flip when fine-tuning: the paper (Appendix B.1.1) follows BiT (Kolesnikov et
  al. 2020, Sec. 3.3): random crop + horizontal flip, except no flip on dSprites location /
  orientation and SmallNORB azimuth, and no random crop on CLEVR count, CLEVR distance, DMLab,
  KITTI distance and dSprites location.
- val200: google-research/task_adaptation `task_adaptation/data/<task>.py`, the "val200" entry
  of `tfds_splits` (N = its train split's size: caltech.py 90% of TFDS's 3060, cifar.py 90% of
  50000, oxford_iiit_pet.py 80% of 3680, svhn.py 90% of 73257, eurosat.py 60% of 27000,
  resisc45.py 60% of 31500, clevr.py 90% of 70000, dsprites.py 80% of 737280). train800 is
  "train[:800]" in every file.
- published: whether the Hub repo the registry reads has a split holding those 200 rows. The
  clip-benchmark repos publish task_adaptation's "train" and "test" splits only (sizes on their
  Hub pages: CIFAR-100 train 45k, SVHN 65.9k, Caltech101 2.75k, RESISC45 18.9k, SmallNORB 24.3k /
  12.2k test); dpdl-benchmark/sun397 publishes TFDS's train / validation / test.
- The paper's single setting (Appendix B.1.1, Table 4): lr 0.01, 2500 steps, batch 512, 384 px.
"""

# task: (random crop, flip, task_adaptation's val200, val200 rows published)
VTAB_PROTOCOL = {
    "vtab/caltech101": (True, True, "train[2754:2954]", False),
    "vtab/cifar100": (True, True, "train[45000:45200]", False),
    "vtab/dtd": (True, True, "validation[:200]", False),
    "vtab/flowers102": (True, True, "validation[:200]", False),
    "vtab/pets": (True, True, "train[2944:3144]", False),
    "vtab/svhn": (True, True, "train[65931:66131]", False),
    "vtab/sun397": (True, True, "validation[:200]", True),
    "vtab/patch_camelyon": (True, True, "validation[:200]", False),
    "vtab/eurosat": (True, True, "train[16200:16400]", False),
    "vtab/resisc45": (True, True, "train[18900:19100]", False),
    "vtab/diabetic_retinopathy": (True, True, "validation[:200]", False),
    "vtab/clevr_count": (False, True, "train[63000:63200]", False),
    "vtab/clevr_distance": (False, True, "train[63000:63200]", False),
    "vtab/dmlab": (False, True, "validation[:200]", False),
    "vtab/kitti_distance": (False, True, "validation[:200]", False),
    "vtab/dsprites_location": (False, False, "train[589824:590024]", False),
    "vtab/dsprites_orientation": (True, False, "train[589824:590024]", False),
    "vtab/smallnorb_azimuth": (True, False, "test[:200]", False),
    "vtab/smallnorb_elevation": (True, True, "test[:200]", False),
}

PAPER_VTAB_SETTING = {"lr": 0.01, "steps": 2500, "batch_size": 512, "resolution": 384}
