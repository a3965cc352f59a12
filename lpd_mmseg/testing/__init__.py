"""Test and demo support that is not needed at run time: the synthetic
BCSS-WSSS-layout data generator (after ``mmdet.testing``)."""
