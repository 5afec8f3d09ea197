//! Builds the C ABI over SentencePiece's C++ trainer when the `sentencepiece` feature is on
//! (needs Debian's libsentencepiece-dev or the same headers and libraries elsewhere).

fn main() {
    println!("cargo:rerun-if-changed=src/vocab/cpp/spm_train.cc");
    #[cfg(feature = "sentencepiece")]
    {
        cc::Build::new().cpp(true).std("c++17").file("src/vocab/cpp/spm_train.cc").compile("langadapt_spm_train");
        println!("cargo:rustc-link-lib=sentencepiece_train");
        println!("cargo:rustc-link-lib=sentencepiece");
    }
}
