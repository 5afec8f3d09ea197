// A C ABI over SentencePiece's C++ trainer (feature `sentencepiece`): sentences come from Rust, the trained
// ModelProto bytes go back to Rust; nothing is read from or written to disk by the trainer.
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

class ArrayIterator : public sentencepiece::SentenceIterator {
 public:
  ArrayIterator(const char* const* s, const size_t* lens, size_t n) : s_(s), lens_(lens), n_(n) { Load(); }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    ++i_;
    Load();
  }
  const std::string& value() const override { return v_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void Load() {
    if (i_ < n_) v_.assign(s_[i_], lens_[i_]);
  }
  const char* const* s_;
  const size_t* lens_;
  size_t n_;
  size_t i_ = 0;
  std::string v_;
};

}  // namespace

extern "C" int langadapt_spm_train(const char* const* keys, const char* const* values, size_t n_kv,
                                   const char* const* sentences, const size_t* lens, size_t n_sent,
                                   char** model_out, size_t* model_len, char* err, size_t err_len) {
  std::unordered_map<std::string, std::string> kwargs;
  for (size_t i = 0; i < n_kv; ++i) kwargs[keys[i]] = values[i];
  ArrayIterator it(sentences, lens, n_sent);
  std::string proto;
  sentencepiece::util::Status st = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, &proto);
  if (!st.ok()) {
    std::string m = st.ToString();
    std::strncpy(err, m.c_str(), err_len - 1);
    err[err_len - 1] = 0;
    return 1;
  }
  *model_out = static_cast<char*>(std::malloc(proto.size()));
  std::memcpy(*model_out, proto.data(), proto.size());
  *model_len = proto.size();
  return 0;
}

extern "C" void langadapt_spm_free(char* p) { std::free(p); }
