"""Attribution graphs of dense models through transcoders and CLTs (Circuit Tracing, 2025)."""
