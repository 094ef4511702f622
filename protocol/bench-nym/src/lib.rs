//! Nothing here: this package exists for its benchmark, `benches/hop.rs`,
//! which times a Leak hop and a Nym `sphinx-packet` hop side by side.
