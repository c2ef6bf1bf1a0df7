// Streaming a slice's weights to a worker without the model file: the coordinator's ranges,
// the worker's sparse copy, its hash checks and its cache.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/weight_streamer.h"
#include "gtest/gtest.h"
#include "model/content_hash.h"
#include "model/model_file.h"
#include "tests/test_util.h"
#include "worker/weight_receiver.h"

namespace shardrun {
namespace {

using ::shardrun::testing::MakeTempDir;
using ::shardrun::testing::SharedPath;

class WeightStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = ModelFile::Open(SharedPath("models/stories260K.bin"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    streamer_ = std::make_unique<WeightStreamer>(*model_);
    cache_dir_ = MakeTempDir();
    // Layers 1..2 only: the other layers stay holes in the copy.
    assign_.set_plan_id(7);
    assign_.mutable_slice()->set_layer_begin(1);
    assign_.mutable_slice()->set_layer_end(3);
    const Sha256 hash = HashBytes(model_->bytes());
    assign_.set_model_hash(hash.data(), hash.size());
    assign_.set_model_file_size(static_cast<int64_t>(model_->file_size()));
    for (const wire::FileRange& r : streamer_->RangesFor({false, {1, 3}, false})) {
      *assign_.add_ranges() = r;
    }
  }
  void TearDown() override { std::filesystem::remove_all(cache_dir_); }

  const wire::FileRange& Range(const std::string& name) const {
    for (const wire::FileRange& r : assign_.ranges()) {
      if (r.name() == name) return r;
    }
    ADD_FAILURE() << "no range " << name;
    return assign_.ranges(0);
  }

  // Sends every missing range in 1000-byte chunks, flipping a byte of `corrupt` on the way;
  // returns the first error.
  absl::Status Stream(WeightReceiver& receiver, const std::string& corrupt = "") {
    for (const std::string& name : receiver.missing()) {
      const wire::FileRange& range = Range(name);
      for (int64_t offset = 0; offset < range.bytes(); offset += 1000) {
        const int64_t n = std::min<int64_t>(1000, range.bytes() - offset);
        std::vector<uint8_t> bytes(model_->bytes().data() + range.offset() + offset,
                                   model_->bytes().data() + range.offset() + offset + n);
        if (name == corrupt && offset == 0) bytes[0] ^= 1;
        wire::WeightChunk chunk;
        chunk.set_plan_id(7);
        chunk.set_tensor(name);
        chunk.set_offset(offset);
        chunk.set_tensor_bytes(range.bytes());
        chunk.set_last(offset + n == range.bytes());
        if (chunk.last()) chunk.set_tensor_sha256(range.sha256());
        if (absl::Status s = receiver.Receive(chunk, bytes); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  std::unique_ptr<ModelFile> model_;
  std::unique_ptr<WeightStreamer> streamer_;
  std::string cache_dir_;
  wire::Assign assign_;
};

TEST_F(WeightStreamTest, RangesAreTheHeaderAndTheSliceTensors) {
  ASSERT_GT(assign_.ranges_size(), 1);
  EXPECT_EQ(assign_.ranges(0).name(), kHeaderRange);
  EXPECT_EQ(assign_.ranges(0).offset(), 0);
  for (const wire::FileRange& r : assign_.ranges()) {
    EXPECT_TRUE(r.name() == kHeaderRange || r.name().starts_with("blk.1.") ||
                r.name().starts_with("blk.2."))
        << r.name();
    const Sha256 hash = HashBytes(model_->bytes().subspan(r.offset(), r.bytes()));
    EXPECT_EQ(r.sha256(), std::string(hash.begin(), hash.end())) << r.name();
  }
}

TEST_F(WeightStreamTest, TheSparseCopyOpensWithTheSliceTensorsAndIsCached) {
  auto receiver = WeightReceiver::Begin(assign_, cache_dir_);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  EXPECT_EQ((*receiver)->missing().size(), static_cast<size_t>(assign_.ranges_size()));
  EXPECT_FALSE((*receiver)->complete());
  ASSERT_TRUE(Stream(**receiver).ok());
  EXPECT_TRUE((*receiver)->complete());
  EXPECT_EQ((*receiver)->bytes_done(), (*receiver)->bytes_total());
  auto copy = (*receiver)->Finish();
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ((*copy)->config().n_layers, model_->config().n_layers);
  EXPECT_EQ((*copy)->file_size(), model_->file_size());
  for (const char* name : {"blk.1.attn_q.weight", "blk.2.ffn_down.weight"}) {
    const TensorView* want = model_->Find(name);
    const TensorView* got = (*copy)->Find(name);
    ASSERT_NE(got, nullptr) << name;
    EXPECT_EQ(std::memcmp(want->data, got->data, want->bytes), 0) << name;
  }
  // Not in the slice: never sent, a hole of zeros.
  const TensorView* hole = (*copy)->Find("blk.0.attn_q.weight");
  ASSERT_NE(hole, nullptr);
  const auto* p = static_cast<const uint8_t*>(hole->data);
  EXPECT_TRUE(std::all_of(p, p + hole->bytes, [](uint8_t b) { return b == 0; }));

  // A restart finds everything in the cache.
  auto again = WeightReceiver::Begin(assign_, cache_dir_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)->missing().empty());
  EXPECT_TRUE((*again)->complete());
  EXPECT_TRUE((*again)->Finish().ok());
}

TEST_F(WeightStreamTest, ACorruptedChunkFailsNamingTheTensor) {
  auto receiver = WeightReceiver::Begin(assign_, cache_dir_);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  const absl::Status s = Stream(**receiver, "blk.2.attn_v.weight");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("tensor blk.2.attn_v.weight"), std::string::npos) << s;
}

TEST_F(WeightStreamTest, RejectsChunksNotAsked) {
  auto receiver = WeightReceiver::Begin(assign_, cache_dir_);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  const std::vector<uint8_t> bytes(8);
  wire::WeightChunk chunk;
  chunk.set_tensor("blk.0.attn_q.weight");
  chunk.set_tensor_bytes(64);
  EXPECT_FALSE((*receiver)->Receive(chunk, bytes).ok());
  const wire::FileRange& range = Range("blk.1.attn_q.weight");
  chunk.set_tensor(range.name());
  chunk.set_tensor_bytes(range.bytes());
  chunk.set_offset(8);  // the range's first chunk has not arrived
  EXPECT_FALSE((*receiver)->Receive(chunk, bytes).ok());
}

TEST_F(WeightStreamTest, AFlippedByteOnDiskIsFetchedAgain) {
  {
    auto receiver = WeightReceiver::Begin(assign_, cache_dir_);
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    ASSERT_TRUE(Stream(**receiver).ok());
    ASSERT_TRUE((*receiver)->Finish().ok());
  }
  const wire::FileRange& range = Range("blk.1.ffn_up.weight");
  std::string path;
  for (const auto& entry : std::filesystem::directory_iterator(cache_dir_)) {
    if (entry.path().extension() == ".model") path = entry.path().string();
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(range.offset() + 3);
    const char c = static_cast<char>(f.get() ^ 0x40);
    f.seekp(range.offset() + 3);
    f.put(c);
  }
  auto again = WeightReceiver::Begin(assign_, cache_dir_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->missing(), std::vector<std::string>{range.name()});
  EXPECT_EQ((*again)->bytes_total(), range.bytes());
  ASSERT_TRUE(Stream(**again).ok());
  EXPECT_TRUE((*again)->Finish().ok());
}

TEST_F(WeightStreamTest, AnAssignWithoutRangesIsRefused) {
  assign_.clear_ranges();
  auto receiver = WeightReceiver::Begin(assign_, cache_dir_);
  EXPECT_FALSE(receiver.ok());
  EXPECT_NE(receiver.status().message().find("no weights to stream"), std::string::npos);
}

}  // namespace
}  // namespace shardrun
