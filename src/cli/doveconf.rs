//! `doveconf`. (Placeholder: being written; issue 2.)

pub fn main(_args: &[String]) -> i32 {
    eprintln!("doveconf: not implemented yet");
    75
}
