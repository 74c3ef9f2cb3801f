//! Source patches: reading them in every form people write them (`parse`, through `diffy`), placing
//! their hunks the way GNU patch does (`apply`), and changing a tree in a way that can always be undone
//! (`source`).

pub mod apply;
pub mod parse;
pub mod source;
