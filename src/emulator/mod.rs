//! The Poynt emulator (being written).
