//! One session's two directions.
