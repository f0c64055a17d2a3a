//! `postfix` command. (Placeholder: `postfix check` is being written; issue 2.)

pub fn main(_args: &[String]) -> i32 {
    eprintln!("postfix: not implemented yet");
    75
}
