//! The dispatcher's unit suite.
