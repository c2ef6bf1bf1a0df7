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
  if (outlet_ != nullptr) {
    MakeFrames(header_, tensors, &send_frames_);
    if (outlet_->TrySend(send_frames_)) return absl::OkStatus();
  }
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
    if (inbox_ != nullptr && ReceiveLocal()) return true;
    polled_.clear();
    AppendPollItems(&polled_);
    auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                             deadline - std::chrono::steady_clock::now()),
                         std::chrono::milliseconds(0));
    if (left.count() > 0 && !PrepareToSleep()) left = std::chrono::milliseconds(0);
    const int ready = zmq::poll(polled_, left);
    Polled(polled_);
    if (inbox_ != nullptr && ReceiveLocal()) return true;
    if ((polled_[0].revents & ZMQ_POLLIN) && ReceiveOne()) return true;
    if (ready <= 0 && left.count() > 0) return false;
    if (std::chrono::steady_clock::now() >= deadline) return false;
  }
}

void Channel::AttachInbox(std::unique_ptr<LinkInbox> inbox) {
  if (peer_filter_) {
    spdlog::warn("{}: no link on an authenticated channel", name_);
    return;
  }
  inbox_ = std::move(inbox);
}

void Channel::OpenInbox(LinkMode mode, const std::string& tcp_host) {
  if (mode == LinkMode::kNone) return;
  absl::StatusOr<std::unique_ptr<LinkInbox>> inbox = LinkInbox::Open(mode, tcp_host);
  if (!inbox.ok()) {
    spdlog::warn("{}: no link ({}); messages come by socket only", name_,
                 std::string(inbox.status().message()));
    return;
  }
  AttachInbox(*std::move(inbox));
  if (inbox_ != nullptr) spdlog::debug("{}: links at {}", name_, inbox_->address());
}

void Channel::LinkTo(const std::string& address, LinkMode mode) {
  if (address.empty() || mode == LinkMode::kNone) return;
  absl::StatusOr<std::unique_ptr<LinkOutlet>> outlet = LinkOutlet::Connect(address, mode);
  if (!outlet.ok()) {
    spdlog::warn("{}: {}", name_, std::string(outlet.status().message()));
    return;
  }
  outlet_ = *std::move(outlet);
}

void Channel::AppendPollItems(std::vector<zmq::pollitem_t>* items) {
  items->push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
  if (inbox_ != nullptr) inbox_->AppendPollItems(items);
}

void Channel::Polled(std::span<const zmq::pollitem_t> items) {
  if (inbox_ == nullptr || items.size() < 2) return;
  inbox_->Awake();
  inbox_->Service(items.subspan(1));
}

bool Channel::ReceiveLocal() {
  absl::Status broken;
  while (true) {
    if (!inbox_->Next(&frames_, &broken)) {
      if (broken.ok()) return false;
      // A ring that broke the format is gone; the next sender's may still hold messages.
      stats_.Count(broken);
      LogDrop(broken);
      broken = absl::OkStatus();
      continue;
    }
    sender_.clear();
    sender_user_id_.clear();
    sender_access_ = PeerAccess::kFull;
    last_link_ = inbox_->kind();
    const absl::Status status = DecodeMessageInto(frames_, limits_, &received_.Fresh(), &tensors_);
    stats_.Count(status);
    if (status.ok()) {
      last_header_.assign(reinterpret_cast<const char*>(frames_[0].data), frames_[0].size);
      return true;
    }
    LogDrop(status);
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
  last_link_ = LinkKind::kSocket;
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
  if (status.ok()) {
    last_header_.assign(reinterpret_cast<const char*>(frames_[0].data), frames_[0].size);
    return true;
  }
  LogDrop(status);
  return false;
}

void Channel::WarmUp() {
  if (last_header_.empty()) return;
  warm_.Fresh().ParseFromArray(last_header_.data(), static_cast<int>(last_header_.size()));
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
