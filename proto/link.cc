#include "proto/link.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"

namespace shardrun {

absl::StatusOr<LinkMode> ParseLinkMode(const std::string& text) {
  if (text == "auto") return LinkMode::kAuto;
  if (text == "tcp") return LinkMode::kTcp;
  if (text == "none") return LinkMode::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown link mode '", text, "' (auto, tcp or none)"));
}

const char* LinkModeName(LinkMode mode) {
  switch (mode) {
    case LinkMode::kAuto:
      return "auto";
    case LinkMode::kTcp:
      return "tcp";
    case LinkMode::kNone:
      return "none";
  }
  return "?";
}

// ---- Receiver ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LinkInbox>> LinkInbox::Open(LinkMode mode,
                                                           const std::string& tcp_host) {
  if (mode == LinkMode::kNone) return absl::FailedPreconditionError("links are off");
  std::unique_ptr<LinkInbox> inbox(new LinkInbox());
  std::vector<std::string> parts, failures;
  if (mode == LinkMode::kAuto) {
    absl::StatusOr<std::unique_ptr<LocalInbox>> local = LocalInbox::Create();
    if (local.ok()) {
      inbox->local_ = *std::move(local);
      parts.push_back(inbox->local_->address());
    } else {
      failures.push_back(std::string(local.status().message()));
    }
  }
  if (!tcp_host.empty()) {
    absl::StatusOr<std::unique_ptr<TcpInbox>> tcp = TcpInbox::Listen(tcp_host);
    if (tcp.ok()) {
      inbox->tcp_ = *std::move(tcp);
      parts.push_back(inbox->tcp_->address());
    } else {
      failures.push_back(std::string(tcp.status().message()));
    }
  }
  if (parts.empty()) {
    return absl::UnavailableError(failures.empty() ? "no link to offer"
                                                   : absl::StrJoin(failures, "; "));
  }
  inbox->address_ = absl::StrJoin(parts, ",");
  return inbox;
}

void LinkInbox::AppendPollItems(std::vector<zmq::pollitem_t>* items) {
  const size_t before = items->size();
  if (local_ != nullptr) local_->AppendPollItems(items);
  local_items_ = items->size() - before;
  if (tcp_ != nullptr) tcp_->AppendPollItems(items);
}

void LinkInbox::Service(std::span<const zmq::pollitem_t> items) {
  const size_t local = std::min(local_items_, items.size());
  if (local_ != nullptr) local_->Service(items.first(local));
  if (tcp_ != nullptr) tcp_->Service(items.subspan(local));
}

bool LinkInbox::Next(std::vector<Frame>* frames, absl::Status* broken) {
  // Both inboxes are asked, first one then the other, so that neither kind of sender waits
  // behind a stream of the other's.
  tcp_first_ = !tcp_first_;
  for (int turn = 0; turn < 2; ++turn) {
    const bool tcp = (turn == 0) == tcp_first_;
    if (tcp && tcp_ != nullptr && tcp_->Next(frames, broken)) {
      kind_ = LinkKind::kTcp;
      return true;
    }
    if (!tcp && local_ != nullptr && local_->Next(frames, broken)) {
      kind_ = LinkKind::kSharedMemory;
      return true;
    }
    if (!broken->ok()) return false;
  }
  return false;
}

bool LinkInbox::PrepareToSleep() {
  if (tcp_ != nullptr && tcp_->HasMessage()) return false;
  return local_ == nullptr || local_->PrepareToSleep();
}

void LinkInbox::Awake() {
  if (local_ != nullptr) local_->Awake();
}

bool LinkInbox::HasMessage() const {
  return (local_ != nullptr && local_->HasMessage()) || (tcp_ != nullptr && tcp_->HasMessage());
}

int LinkInbox::senders() const {
  return (local_ != nullptr ? local_->senders() : 0) + (tcp_ != nullptr ? tcp_->senders() : 0);
}

// ---- Sender -----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LinkOutlet>> LinkOutlet::Connect(const std::string& address,
                                                                LinkMode mode) {
  std::unique_ptr<LinkOutlet> outlet(new LinkOutlet());
  for (absl::string_view part : absl::StrSplit(address, ',', absl::SkipEmpty())) {
    if (!absl::StartsWith(part, "local:") && !absl::StartsWith(part, "tcp:")) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a link address (local:<name> or tcp:<host>:<port>): ", part));
    }
    const bool allowed =
        mode == LinkMode::kAuto || (mode == LinkMode::kTcp && absl::StartsWith(part, "tcp:"));
    if (allowed) outlet->alternatives_.push_back(std::string(part));
  }
  if (outlet->alternatives_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no link in '", address, "' that links ", LinkModeName(mode), " allows"));
  }
  outlet->Current();  // starts connecting the first
  return outlet;
}

bool LinkOutlet::Current() {
  while (at_ < alternatives_.size()) {
    if (local_ != nullptr && !local_->failed()) return true;
    if (tcp_ != nullptr && !tcp_->failed()) return true;
    if (local_ != nullptr || tcp_ != nullptr) {
      if ((local_ != nullptr && local_->receiver_gone()) ||
          (tcp_ != nullptr && tcp_->receiver_gone())) {
        // Every way in leads to the same receiver: none is left.
        receiver_gone_ = true;
        local_.reset();
        tcp_.reset();
        at_ = alternatives_.size();
        return false;
      }
      // This way in failed: the next one.
      local_.reset();
      tcp_.reset();
      ++at_;
      continue;
    }
    const std::string& address = alternatives_[at_];
    if (address.starts_with("local:")) {
      absl::StatusOr<std::unique_ptr<LocalOutlet>> local = LocalOutlet::Connect(address);
      if (local.ok()) local_ = *std::move(local);
    } else {
      absl::StatusOr<std::unique_ptr<TcpOutlet>> tcp = TcpOutlet::Connect(address);
      if (tcp.ok()) {
        tcp_ = *std::move(tcp);
      } else {
        spdlog::debug("link to {}: {}", address, std::string(tcp.status().message()));
      }
    }
    if (local_ == nullptr && tcp_ == nullptr) ++at_;
  }
  return false;
}

bool LinkOutlet::up() {
  if (local_ != nullptr ? local_->up() : tcp_ != nullptr && tcp_->up()) return true;
  while (Current()) {
    if (local_ != nullptr) {
      local_->TrySend({});  // sends nothing; takes the ring if it has arrived
      if (local_->up()) return true;
      if (!local_->failed()) return false;  // not yet
    } else {
      if (tcp_->up()) return true;
      if (!tcp_->failed()) return false;
    }
  }
  return false;
}

bool LinkOutlet::TrySend(std::span<const Frame> frames) {
  while (Current()) {
    const bool sent = local_ != nullptr ? local_->TrySend(frames) : tcp_->TrySend(frames);
    if (sent) {
      kind_ = local_ != nullptr ? LinkKind::kSharedMemory : LinkKind::kTcp;
      return true;
    }
    // Failed for good just now: try the next way in with this message; else the socket.
    if (local_ != nullptr ? !local_->failed() : !tcp_->failed()) return false;
  }
  return false;
}

bool LinkOutlet::ReceiverGone() {
  if (local_ != nullptr) return local_->ReceiverGone() || receiver_gone_;
  if (tcp_ != nullptr) return tcp_->ReceiverGone() || receiver_gone_;
  return receiver_gone_;
}

std::string EndpointHost(const std::string& endpoint) {
  std::string rest = endpoint;
  if (const size_t p = rest.find("://"); p != std::string::npos) rest = rest.substr(p + 3);
  if (const size_t p = rest.rfind(':'); p != std::string::npos) rest = rest.substr(0, p);
  if (rest.size() > 2 && rest.front() == '[' && rest.back() == ']') {
    rest = rest.substr(1, rest.size() - 2);
  }
  return rest;
}

std::string LinkAddressFor(const std::string& address, const std::string& peer_host) {
  std::vector<std::string> parts = absl::StrSplit(address, ',');
  for (std::string& part : parts) {
    if (part.starts_with("tcp:*:")) {
      const bool v6 = peer_host.find(':') != std::string::npos;
      part = absl::StrCat("tcp:", v6 ? "[" : "", peer_host, v6 ? "]" : "", part.substr(5));
    }
  }
  return absl::StrJoin(parts, ",");
}

bool SendByLink(LinkOutlet& outlet, const wire::Envelope& envelope,
                std::span<const std::span<const uint8_t>> tensors, std::string* header,
                std::vector<Frame>* frames) {
  // Nothing is encoded for a link that cannot carry it.
  if (!outlet.up()) return false;
  if (!EncodeEnvelope(envelope, header).ok()) return false;
  MakeFrames(*header, tensors, frames);
  return outlet.TrySend(*frames);
}

}  // namespace shardrun
