// A RocksDB file system for the fault tests (power_loss_test.cc,
// disk_full_test.cc): it wraps the real one and remembers, for every file
// written through it, how much of it a power loss would keep.
//
// The model of a power loss (ext4 with data=ordered, the usual Debian
// default, is at least this strict):
//  * a file's bytes are kept up to its last Sync/Fsync; RangeSync
//    (sync_file_range) and Flush promise nothing, and neither does Close;
//  * a file created (or linked) since its directory's last Fsync is gone;
//  * a rename is atomic and kept, and so is every name created in its
//    directory before it (a journaling file system keeps a directory's
//    changes in order; RocksDB renames CURRENT over the old one to point at
//    a new MANIFEST and syncs the directory right after);
//  * a delete is kept.
//
// Crash() is the instant of the power loss: from then on every write,
// sync, rename and delete fails with an IOError and changes nothing, so the
// store that is still open cannot make anything more durable. Once it is
// destroyed, DropUnsynced() turns the files into what the disk would hold
// after the power came back: unsynced tails cut off, unsynced new files
// deleted. Syncs are not passed to the real file system (the test decides
// what survives, not the disk), which keeps a cycle fast.
//
// FailWritesAfter(n) is the disk filling up: once n more bytes have been
// appended, every append fails with IOStatus::NoSpace until FreeSpace().
#ifndef CAIRN_TESTS_ENGINE_FAULT_FS_H_
#define CAIRN_TESTS_ENGINE_FAULT_FS_H_

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "rocksdb/env.h"
#include "rocksdb/file_system.h"

namespace cairn::testing_fs {

class FaultFs : public rocksdb::FileSystemWrapper {
 public:
  FaultFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

  static const char* kClassName() { return "CairnFaultFs"; }
  const char* Name() const override { return kClassName(); }

  // The power goes off.
  void Crash() {
    std::lock_guard<std::mutex> l(mu_);
    dead_ = true;
  }

  // After the store is closed: what a disk keeps of what was written since
  // this file system was made (files it did not write are left alone).
  // Returns the number of files cut or removed.
  size_t DropUnsynced() {
    std::lock_guard<std::mutex> l(mu_);
    size_t changed = 0;
    for (const auto& [path, f] : files_) {
      // POSIX calls: the wrapped file system need not implement Truncate.
      if (!f.dir_synced) {
        changed += unlink(path.c_str()) == 0;
      } else if (f.size > f.synced) {
        changed += truncate(path.c_str(), static_cast<off_t>(f.synced)) == 0;
      }
    }
    files_.clear();
    return changed;
  }

  // Bytes appended and not yet synced, over every file (what a power loss
  // now would drop).
  uint64_t UnsyncedBytes() const {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t n = 0;
    for (const auto& [path, f] : files_) n += f.dir_synced ? f.size - f.synced : f.size;
    return n;
  }

  // The disk is full once `bytes` more have been appended.
  void FailWritesAfter(uint64_t bytes) {
    std::lock_guard<std::mutex> l(mu_);
    space_left_ = bytes;
    limited_ = true;
  }
  void FreeSpace() {
    std::lock_guard<std::mutex> l(mu_);
    limited_ = false;
  }
  // Appends refused for want of space.
  uint64_t no_space_errors() const {
    std::lock_guard<std::mutex> l(mu_);
    return no_space_errors_;
  }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->NewWritableFile(f, o, &file, dbg);
    if (!s.ok()) return s;
    {
      std::lock_guard<std::mutex> l(mu_);
      files_[f] = FileState{};  // created (or truncated): nothing of it kept yet
    }
    *r = std::make_unique<File>(std::move(file), this, f);
    return s;
  }

  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, o, &file, dbg);
    if (!s.ok()) return s;
    uint64_t size = 0;
    target()->GetFileSize(f, rocksdb::IOOptions(), &size, dbg).PermitUncheckedError();
    {
      std::lock_guard<std::mutex> l(mu_);
      auto [it, fresh] = files_.try_emplace(f);
      if (fresh) it->second = FileState{size, size, true};  // what it held is on disk
    }
    *r = std::make_unique<File>(std::move(file), this, f);
    return s;
  }

  rocksdb::IOStatus ReuseWritableFile(const std::string&, const std::string&,
                                      const rocksdb::FileOptions&,
                                      std::unique_ptr<rocksdb::FSWritableFile>*,
                                      rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("FaultFs: no WAL recycling");
  }

  rocksdb::IOStatus NewRandomRWFile(const std::string&, const rocksdb::FileOptions&,
                                    std::unique_ptr<rocksdb::FSRandomRWFile>*,
                                    rocksdb::IODebugContext*) override {
    return rocksdb::IOStatus::NotSupported("FaultFs: no random-write files");
  }

  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& io,
                                 std::unique_ptr<rocksdb::FSDirectory>* r,
                                 rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSDirectory> dir;
    rocksdb::IOStatus s = target()->NewDirectory(name, io, &dir, dbg);
    if (!s.ok()) return s;
    *r = std::make_unique<Directory>(std::move(dir), this, Normalize(name));
    return s;
  }

  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& io,
                               rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    rocksdb::IOStatus s = target()->DeleteFile(f, io, dbg);
    std::lock_guard<std::mutex> l(mu_);
    if (s.ok()) files_.erase(f);
    return s;
  }

  rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& io,
                               rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    rocksdb::IOStatus s = target()->RenameFile(from, to, io, dbg);
    if (!s.ok()) return s;
    std::lock_guard<std::mutex> l(mu_);
    // A journaling file system keeps a directory's changes in order: a kept
    // rename keeps the names created before it (CURRENT's new MANIFEST).
    MarkDirSynced(Parent(to));
    auto it = files_.find(from);
    if (it == files_.end()) {
      files_.erase(to);  // the new name holds a file written before: on disk
    } else {
      FileState f = it->second;
      f.dir_synced = true;  // atomic and kept (see the top of the file)
      files_.erase(it);
      files_[to] = f;
    }
    return s;
  }

  rocksdb::IOStatus LinkFile(const std::string& from, const std::string& to,
                             const rocksdb::IOOptions& io, rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    rocksdb::IOStatus s = target()->LinkFile(from, to, io, dbg);
    if (!s.ok()) return s;
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(from);
    FileState f;
    if (it == files_.end()) {
      target()->GetFileSize(from, io, &f.size, dbg).PermitUncheckedError();
      f.synced = f.size;
    } else {
      f = it->second;
    }
    f.dir_synced = false;  // a new name: kept once its directory is synced
    files_[to] = f;
    return s;
  }

  rocksdb::IOStatus Truncate(const std::string& f, size_t size, const rocksdb::IOOptions& io,
                             rocksdb::IODebugContext* dbg) override {
    if (IsDead()) return Dead();
    rocksdb::IOStatus s = target()->Truncate(f, size, io, dbg);
    std::lock_guard<std::mutex> l(mu_);
    auto it = files_.find(f);
    if (s.ok() && it != files_.end()) {
      it->second.size = size;
      it->second.synced = std::min<uint64_t>(it->second.synced, size);
    }
    return s;
  }

 private:
  struct FileState {
    uint64_t size = 0;        // bytes appended
    uint64_t synced = 0;      // of which a power loss keeps
    bool dir_synced = false;  // its name survives a power loss
  };

  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> f, FaultFs* fs, std::string path)
        : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs), path_(std::move(path)) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& io,
                             rocksdb::IODebugContext* dbg) override {
      rocksdb::IOStatus s = fs_->Reserve(data.size());
      if (!s.ok()) return s;
      s = target()->Append(data, io, dbg);
      if (s.ok()) fs_->Grow(path_, data.size());
      return s;
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& io,
                             const rocksdb::DataVerificationInfo&,
                             rocksdb::IODebugContext* dbg) override {
      return Append(data, io, dbg);
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& io,
                                       rocksdb::IODebugContext* dbg) override {
      rocksdb::IOStatus s = fs_->Reserve(data.size());
      if (!s.ok()) return s;
      s = target()->PositionedAppend(data, offset, io, dbg);
      if (s.ok()) fs_->GrowTo(path_, offset + data.size());
      return s;
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                                       const rocksdb::IOOptions& io,
                                       const rocksdb::DataVerificationInfo&,
                                       rocksdb::IODebugContext* dbg) override {
      return PositionedAppend(data, offset, io, dbg);
    }
    rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& io,
                               rocksdb::IODebugContext* dbg) override {
      if (fs_->IsDead()) return Dead();
      rocksdb::IOStatus s = target()->Truncate(size, io, dbg);
      if (s.ok()) fs_->TruncateTo(path_, size);
      return s;
    }
    rocksdb::IOStatus Flush(const rocksdb::IOOptions& io, rocksdb::IODebugContext* dbg) override {
      if (fs_->IsDead()) return Dead();
      return target()->Flush(io, dbg);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
      return fs_->SyncFile(path_);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
      return fs_->SyncFile(path_);
    }
    rocksdb::IOStatus RangeSync(uint64_t, uint64_t, const rocksdb::IOOptions&,
                                rocksdb::IODebugContext*) override {
      return fs_->IsDead() ? Dead() : rocksdb::IOStatus::OK();  // promises nothing
    }
    bool IsSyncThreadSafe() const override { return true; }

   private:
    FaultFs* fs_;
    std::string path_;
  };

  class Directory : public rocksdb::FSDirectoryWrapper {
   public:
    Directory(std::unique_ptr<rocksdb::FSDirectory> d, FaultFs* fs, std::string path)
        : FSDirectoryWrapper(std::move(d)), fs_(fs), path_(std::move(path)) {}
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
      return fs_->SyncDir(path_);
    }
    rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions&, rocksdb::IODebugContext*,
                                          const rocksdb::DirFsyncOptions&) override {
      return fs_->SyncDir(path_);
    }

   private:
    FaultFs* fs_;
    std::string path_;
  };

  static rocksdb::IOStatus Dead() { return rocksdb::IOStatus::IOError("simulated power loss"); }
  static std::string Normalize(std::string dir) {
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    return dir;
  }
  static std::string Parent(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : Normalize(path.substr(0, slash));
  }

  bool IsDead() const {
    std::lock_guard<std::mutex> l(mu_);
    return dead_;
  }
  rocksdb::IOStatus Reserve(uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    if (dead_) return Dead();
    if (limited_) {
      if (n > space_left_) {
        ++no_space_errors_;
        return rocksdb::IOStatus::NoSpace("simulated full disk");
      }
      space_left_ -= n;
    }
    return rocksdb::IOStatus::OK();
  }
  void Grow(const std::string& path, uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    files_[path].size += n;
  }
  void GrowTo(const std::string& path, uint64_t end) {
    std::lock_guard<std::mutex> l(mu_);
    FileState& f = files_[path];
    f.size = std::max(f.size, end);
  }
  void TruncateTo(const std::string& path, uint64_t size) {
    std::lock_guard<std::mutex> l(mu_);
    FileState& f = files_[path];
    f.size = size;
    f.synced = std::min(f.synced, size);
  }
  rocksdb::IOStatus SyncFile(const std::string& path) {
    std::lock_guard<std::mutex> l(mu_);
    if (dead_) return Dead();
    auto it = files_.find(path);
    if (it != files_.end()) it->second.synced = it->second.size;
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus SyncDir(const std::string& dir) {
    std::lock_guard<std::mutex> l(mu_);
    if (dead_) return Dead();
    MarkDirSynced(dir);
    return rocksdb::IOStatus::OK();
  }
  // REQUIRES: mu_ held.
  void MarkDirSynced(const std::string& dir) {
    for (auto& [path, f] : files_) {
      if (Parent(path) == dir) f.dir_synced = true;
    }
  }

  mutable std::mutex mu_;
  bool dead_ = false;
  bool limited_ = false;
  uint64_t space_left_ = 0;
  uint64_t no_space_errors_ = 0;
  std::map<std::string, FileState> files_;
};

}  // namespace cairn::testing_fs

#endif  // CAIRN_TESTS_ENGINE_FAULT_FS_H_
