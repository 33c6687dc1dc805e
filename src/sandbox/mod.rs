//! The sandbox: limit every descriptor, then give up ambient authority (in progress).
