fn main() -> std::process::ExitCode {
    pc_eventd::main()
}
