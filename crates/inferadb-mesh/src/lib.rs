//! inferadb-mesh
