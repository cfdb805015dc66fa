//! The ts2021 Noise IK handshake and record framing (in progress).
