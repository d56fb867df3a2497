//! Tests of the statement summary.
