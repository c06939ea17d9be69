fn main() -> anyhow::Result<()> {
    quidditch_server::cli::main()
}
