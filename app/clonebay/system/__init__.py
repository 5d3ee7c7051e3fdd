"""Everything that touches the host: programs, devices, udev, partition tables."""
