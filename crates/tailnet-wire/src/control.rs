//! Tailscale control-protocol JSON types and the map stream framing (in progress).
