//! Pure codecs for the harness protocols (in progress).
