//! Source patches: parsing unified diffs (with `diffy`), checking that they stay inside the tree, and
//! applying them in a way that can always be undone.

pub mod source;
