"""On-disk formats: cpio newc, tar, mtree, ISO reading. They know nothing of profiles."""
