"""One widget per module: the disk table, layout views and bars, the job meter."""
