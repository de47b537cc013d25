"""Speed benchmarks: our DyHead code against a straightforward reference, ratios printed in one run.

    python -m benchmarks.tower        # DyHead tower, official sizes and the demo model's
    python -m benchmarks.train_step   # forward + backward of the demo-size tower
    python -m benchmarks.detector     # R50 + FPN + DyHead(6) + ATSS at 800x1333
"""
