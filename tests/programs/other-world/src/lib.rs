//! `weir-test-other-world`: a valid component of another world, which `weir check` and the
//! loader must refuse with a clear reason.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    inline: r#"
        package weir-test:other-world;

        world other {
            export greet: func(name: string) -> string;
        }
    "#,
});

struct Other;

impl Guest for Other {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Other);
