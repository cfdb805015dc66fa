fn main() -> std::process::ExitCode {
    inferadb_mesh::cli::main_with_args(std::env::args_os())
}
