// F1: the stored-record decoders (engine/src/records.h): FlatBuffers
// verification, the staged-event codec, the LZ4 before-image delta and the
// single-field edits of the retention links. The
// first byte picks the decoder; the rest is the record. Corrupt bytes are
// refused with an error, never read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "records.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  namespace records = cairn::records;
  switch (data[0] % 14) {
    case 0:
      (void)records::DecodeLog(in);
      break;
    case 1:
      (void)records::DecodeState(in);
      break;
    case 2:
      (void)records::DecodeVersion(in);
      break;
    case 3:
      (void)records::DecodeChange(in);
      break;
    case 4:
      (void)records::DecodeChangeBefore(in);
      break;
    case 5:
      (void)records::DecodeEntitySeq(in);
      break;
    case 6:
      (void)records::DecodeSession(in);
      break;
    case 7:
      (void)records::DecodeStaged(in);
      break;
    case 8:
      (void)records::DecodeSource(in);
      break;
    case 9:
      (void)records::DecodeStagedEvent(in);
      break;
    // What the retention link merge operators and compaction filter run.
    case 10:
      (void)records::SetVersionNext(in, 1700000000000000);
      break;
    case 11:
      (void)records::SetEntitySeqSuperseded(in, 42);
      break;
    case 12:
      (void)records::PeekVersionNext(in);
      break;
    default:
      (void)records::PeekEntitySeqSuperseded(in);
      break;
  }
  return 0;
}
