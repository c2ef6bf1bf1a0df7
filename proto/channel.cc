#include "proto/channel.h"

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace shardrun {

Channel::Channel(zmq::context_t& context, zmq::socket_type type, std::string name)
    : socket_(context, type), type_(type), name_(std::move(name)) {
  socket_.set(zmq::sockopt::linger, 0);
}

absl::Status Channel::Send(const wire::Envelope& envelope,
                           std::span<const std::span<const uint8_t>> tensors,
                           const std::string& to) {
  if (absl::Status s = EncodeEnvelope(envelope, &header_); !s.ok()) return s;
  try {
    if (!pending_connect_.empty()) {
      socket_.connect(pending_connect_);
      pending_connect_.clear();
    }
    if (type_ == zmq::socket_type::router) {
      if (!socket_.send(zmq::buffer(to), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        return absl::UnavailableError(absl::StrCat(name_, ": cannot send to ", to));
      }
    }
    const auto more = tensors.empty() ? zmq::send_flags::none : zmq::send_flags::sndmore;
    if (!socket_.send(zmq::buffer(header_), more | zmq::send_flags::dontwait)) {
      return absl::UnavailableError(absl::StrCat(name_, ": send queue full"));
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto flags = i + 1 < tensors.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      socket_.send(zmq::const_buffer(tensors[i].data(), tensors[i].size()), flags);
    }
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: a ROUTER peer that is gone (router_mandatory).
    return absl::UnavailableError(absl::StrCat(name_, ": send failed: ", e.what()));
  }
  return absl::OkStatus();
}

bool Channel::Receive(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int ready = zmq::poll(&item, 1, std::max(left, std::chrono::milliseconds(0)));
    if (ready <= 0) return false;
    if (ReceiveOne()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

bool Channel::ReceiveOne() {
  parts_.clear();
  while (true) {
    zmq::message_t part;
    if (!socket_.recv(part, zmq::recv_flags::dontwait)) break;
    const bool more = part.more();
    parts_.push_back(std::move(part));
    if (!more) break;
  }
  if (parts_.empty()) return false;
  size_t first = 0;
  sender_.clear();
  if (type_ == zmq::socket_type::router) {
    sender_ = parts_[0].to_string();
    first = 1;
  }
  sender_user_id_.clear();
  sender_access_ = PeerAccess::kFull;
  if (first < parts_.size()) {
    // Metadata rides on the frames the connection delivered (not on ROUTER's routing id).
    if (const char* user_id = zmq_msg_gets(parts_[first].handle(), "User-Id")) {
      sender_user_id_ = user_id;
    }
    if (peer_filter_) {
      absl::StatusOr<PeerAccess> access = peer_filter_(parts_[first], parts_.size() - first);
      if (!access.ok()) {
        stats_.Count(access.status());
        LogDrop(access.status());
        return false;
      }
      sender_access_ = *access;
    }
  }
  frames_.clear();
  for (size_t i = first; i < parts_.size(); ++i) {
    frames_.push_back({static_cast<const uint8_t*>(parts_[i].data()), parts_[i].size()});
  }
  absl::Status status = DecodeMessageInto(frames_, limits_, &received_.Fresh(), &tensors_);
  const wire::Envelope& envelope = received_.current();
  if (status.ok() && sender_access_ == PeerAccess::kHandshakeOnly && !envelope.has_hello() &&
      !envelope.has_proof()) {
    status = absl::PermissionDeniedError(
        absl::StrCat("a peer that is not admitted yet sent a ",
                     envelope.GetDescriptor()->FindFieldByNumber(envelope.body_case())->name(),
                     "; only its hello and proof are heard"));
  }
  stats_.Count(status);
  if (status.ok()) return true;
  LogDrop(status);
  return false;
}

void Channel::LogDrop(const absl::Status& why) {
  // Rate-limited: a flood of garbage must not become a flood of log lines.
  if (++drops_logged_ <= 10 || drops_logged_ % 1000 == 0) {
    spdlog::warn("{}: dropped a message{}: {} ({})", name_,
                 sender_.empty() ? "" : absl::StrCat(" from ", sender_), std::string(why.message()),
                 stats_.ToString());
  }
}

void Channel::DropUnexpected(const std::string& why) {
  ++stats_.dropped_unexpected;  // already counted as received
  if (++drops_logged_ <= 10 || drops_logged_ % 1000 == 0) {
    spdlog::warn("{}: dropped an unexpected message: {} ({})", name_, why, stats_.ToString());
  }
}

}  // namespace shardrun
