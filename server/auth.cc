#include "auth.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cairn/event.h"
#include "cairn/status.h"
#include "rapidjson/document.h"
#include "rapidjson/error/en.h"

namespace cairn::server {
namespace {

bool Allows(const std::vector<std::string>& scopes, std::string_view name) {
  return std::any_of(scopes.begin(), scopes.end(),
                     [&](const std::string& s) { return s == "*" || s == name; });
}

}  // namespace

absl::StatusOr<Auth> Auth::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokens file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  auto auth = FromJson(ss.str());
  if (!auth.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", auth.status().message()));
  }
  return auth;
}

absl::StatusOr<Auth> Auth::FromJson(std::string_view json) {
  rapidjson::Document doc;
  doc.Parse(json.data(), json.size());
  if (doc.HasParseError()) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid JSON at offset ", doc.GetErrorOffset(), ": ",
                     rapidjson::GetParseError_En(doc.GetParseError())));
  }
  if (!doc.IsObject() || !doc.HasMember("tokens") || !doc["tokens"].IsArray()) {
    return absl::InvalidArgumentError("expected an object with a \"tokens\" array");
  }
  Auth auth;
  auth.enabled_ = true;
  const auto& tokens = doc["tokens"].GetArray();
  for (rapidjson::SizeType i = 0; i < tokens.Size(); ++i) {
    const auto& t = tokens[i];
    auto bad = [i](std::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("tokens[", i, "]: ", cairn::AbslView(what)));
    };
    if (!t.IsObject()) return bad("must be an object");
    if (!t.HasMember("token") || !t["token"].IsString() || t["token"].GetStringLength() == 0) {
      return bad("field 'token' must be a non-empty string");
    }
    Grant g;
    for (const char* field : {"write", "read"}) {
      if (!t.HasMember(field)) continue;
      if (!t[field].IsArray()) return bad(absl::StrCat("field '", field, "' must be an array"));
      for (const auto& v : t[field].GetArray()) {
        if (!v.IsString()) return bad(absl::StrCat("field '", field, "' must hold strings"));
        (field[0] == 'w' ? g.write : g.read).emplace_back(v.GetString(), v.GetStringLength());
      }
    }
    if (t.HasMember("admin")) {
      if (!t["admin"].IsBool()) return bad("field 'admin' must be a boolean");
      g.admin = t["admin"].GetBool();
    }
    auth.tokens_[t["token"].GetString()] = std::move(g);
  }
  return auth;
}

absl::Status Auth::Find(const Caller& caller, const Grant** grant) const {
  if (!caller.authorization) {
    return absl::UnauthenticatedError("missing 'authorization: Bearer <token>' metadata");
  }
  std::string_view value = *caller.authorization;
  constexpr std::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError("authorization metadata must be 'Bearer <token>'");
  }
  auto t = tokens_.find(value.substr(kBearer.size()));
  if (t == tokens_.end()) return absl::UnauthenticatedError("unknown token");
  *grant = &t->second;
  return absl::OkStatus();
}

absl::Status Auth::Logged(const Caller& caller, std::string_view method, absl::Status s) const {
  if (!s.ok()) {
    spdlog::warn("denied {} from {}: {}", method, caller.peer, StdView(s.message()));
  }
  return s;
}

absl::Status Auth::Check(const Caller& caller, std::string_view method,
                         const std::function<std::string(const Grant&)>& denial) const {
  if (!enabled_) return absl::OkStatus();
  const Grant* g = nullptr;
  absl::Status s = Find(caller, &g);
  if (s.ok()) {
    if (std::string why = denial(*g); !why.empty()) {
      s = absl::PermissionDeniedError(why);
    }
  }
  return Logged(caller, method, s);
}

absl::Status Auth::Authenticate(const Caller& caller, std::string_view method) const {
  return Check(caller, method, [](const Grant&) { return std::string(); });
}

absl::Status Auth::CanWrite(const Caller& caller, std::string_view method,
                            std::string_view source) const {
  return Check(caller, method, [&](const Grant& g) {
    return Allows(g.write, source)
               ? std::string()
               : absl::StrCat("token may not write to source '", Excerpt(source), "'");
  });
}

absl::Status Auth::CanWriteAny(const Caller& caller, std::string_view method) const {
  return Check(caller, method, [](const Grant& g) {
    return g.write.empty() ? std::string("token may not write") : std::string();
  });
}

absl::Status Auth::CanReadAny(const Caller& caller, std::string_view method) const {
  return Check(caller, method, [](const Grant& g) {
    return g.read.empty() ? std::string("token may not read") : std::string();
  });
}

absl::Status Auth::CanRead(const Caller& caller, std::string_view method,
                           const std::vector<std::string>& collections) const {
  return Check(caller, method, [&](const Grant& g) {
    if (collections.empty()) {
      bool all = std::find(g.read.begin(), g.read.end(), "*") != g.read.end();
      return all ? std::string() : std::string("token may not read all collections; name one");
    }
    for (const auto& c : collections) {
      if (!Allows(g.read, c)) {
        return absl::StrCat("token may not read collection '", Excerpt(c), "'");
      }
    }
    return std::string();
  });
}

absl::Status Auth::CanAdmin(const Caller& caller, std::string_view method) const {
  return Check(caller, method, [](const Grant& g) {
    return g.admin ? std::string() : std::string("token may not use the admin service");
  });
}

}  // namespace cairn::server
