// A small OpenIGTLink peer built on the reference library (Debian's libopenigtlink-dev,
// OpenIGTLink 1.11, protocol 2), compiled by tests/test_igtl_gateway.py.
//
//   client HOST PORT
//
// Connects, then prints every message it receives as one JSON line on stdout:
//   {"type":"POLYDATA","name":..,"crc":true,"points":[[x,y,z],..],"polygons":[[i,j,k],..],
//    "attributes":[{"name":..,"type":2,"components":3,"data":[[..],..]}]}
//   {"type":"TRANSFORM","name":..,"crc":true,"matrix":[[..4..],..4 rows..]}
//   {"type":"POINT","name":..,"crc":true,"points":[{"name":..,"group":..,"owner":..,
//    "position":[x,y,z]}]}
//   {"type":"<other>","name":..,"bytes":n}  (skipped)
// and {"event":"closed"} when the gateway closes the connection. "crc" is the reference
// library's own CRC-64 check of the body (Unpack(1)).
//
// Commands, one per line on stdin, are sent to the gateway:
//   transform NAME r11 r12 r13 tx r21 r22 r23 ty r31 r32 r33 tz   (a 4x4's top three rows)
//   position NAME x y z qx qy qz qw
//   quit
// each answered with {"event":"sent","type":..} once sent.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <list>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "igtlClientSocket.h"
#include "igtlMessageHeader.h"
#include "igtlPointMessage.h"
#include "igtlPolyDataMessage.h"
#include "igtlPositionMessage.h"
#include "igtlTransformMessage.h"

static std::mutex out_lock;

static std::string quoted(const char* text) {
  std::string out = "\"";
  for (const char* c = text; *c; ++c) {
    unsigned char u = static_cast<unsigned char>(*c);
    if (u == '"' || u == '\\') {
      out += '\\';
      out += *c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += *c;
    }
  }
  return out + "\"";
}

static void emit(const std::string& line) {
  std::lock_guard<std::mutex> guard(out_lock);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

static std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

static std::string polydata_json(igtl::PolyDataMessage* msg, bool crc) {
  std::ostringstream out;
  out << "{\"type\":\"POLYDATA\",\"name\":" << quoted(msg->GetDeviceName())
      << ",\"crc\":" << (crc ? "true" : "false") << ",\"points\":[";
  igtl::PolyDataPointArray* points = msg->GetPoints();
  int n = points ? points->GetNumberOfPoints() : 0;
  for (int i = 0; i < n; ++i) {
    igtlFloat32 p[3];
    points->GetPoint(i, p);
    out << (i ? "," : "") << "[" << number(p[0]) << "," << number(p[1]) << "," << number(p[2]) << "]";
  }
  out << "],\"polygons\":[";
  igtl::PolyDataCellArray* polygons = msg->GetPolygons();
  unsigned int cells = polygons ? polygons->GetNumberOfCells() : 0;
  for (unsigned int i = 0; i < cells; ++i) {
    std::list<igtlUint32> cell;
    polygons->GetCell(i, cell);
    out << (i ? "," : "") << "[";
    bool first = true;
    for (igtlUint32 index : cell) {
      out << (first ? "" : ",") << index;
      first = false;
    }
    out << "]";
  }
  out << "],\"attributes\":[";
  for (int a = 0; a < msg->GetNumberOfAttributes(); ++a) {
    igtl::PolyDataAttribute* att = msg->GetAttribute(a);
    unsigned int components = att->GetNumberOfComponents();
    unsigned int size = att->GetSize();
    std::vector<igtlFloat32> data(static_cast<size_t>(size) * components);
    att->GetData(data.data());
    out << (a ? "," : "") << "{\"name\":" << quoted(att->GetName())
        << ",\"type\":" << static_cast<int>(att->GetType()) << ",\"components\":" << components
        << ",\"data\":[";
    for (unsigned int i = 0; i < size; ++i) {
      out << (i ? "," : "") << "[";
      for (unsigned int c = 0; c < components; ++c) {
        out << (c ? "," : "") << number(data[i * components + c]);
      }
      out << "]";
    }
    out << "]}";
  }
  out << "]}";
  return out.str();
}

static std::string transform_json(igtl::TransformMessage* msg, bool crc) {
  igtl::Matrix4x4 m;
  msg->GetMatrix(m);
  std::ostringstream out;
  out << "{\"type\":\"TRANSFORM\",\"name\":" << quoted(msg->GetDeviceName())
      << ",\"crc\":" << (crc ? "true" : "false") << ",\"matrix\":[";
  for (int r = 0; r < 4; ++r) {
    out << (r ? "," : "") << "[";
    for (int c = 0; c < 4; ++c) out << (c ? "," : "") << number(m[r][c]);
    out << "]";
  }
  out << "]}";
  return out.str();
}

static std::string point_json(igtl::PointMessage* msg, bool crc) {
  std::ostringstream out;
  out << "{\"type\":\"POINT\",\"name\":" << quoted(msg->GetDeviceName())
      << ",\"crc\":" << (crc ? "true" : "false") << ",\"points\":[";
  for (int i = 0; i < msg->GetNumberOfPointElement(); ++i) {
    igtl::PointElement::Pointer element;
    msg->GetPointElement(i, element);
    igtlFloat32 p[3];
    element->GetPosition(p);
    out << (i ? "," : "") << "{\"name\":" << quoted(element->GetName())
        << ",\"group\":" << quoted(element->GetGroupName())
        << ",\"owner\":" << quoted(element->GetOwner()) << ",\"position\":[" << number(p[0])
        << "," << number(p[1]) << "," << number(p[2]) << "]}";
  }
  out << "]}";
  return out.str();
}

// Receive one body into `msg` (whose header is `header`); true if its CRC checked.
static bool receive_body(igtl::ClientSocket* socket, igtl::MessageHeader* header,
                         igtl::MessageBase* msg) {
  msg->SetMessageHeader(header);
  msg->AllocatePack();
  if (msg->GetPackBodySize() > 0) {
    socket->Receive(msg->GetPackBodyPointer(), msg->GetPackBodySize());
  }
  return (msg->Unpack(1) & igtl::MessageHeader::UNPACK_BODY) != 0;
}

static void read_commands(igtl::ClientSocket* socket) {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command, name;
    in >> command >> name;
    if (command == "quit") break;
    if (command == "transform") {
      igtl::Matrix4x4 m;
      igtl::IdentityMatrix(m);
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 4; ++c) in >> m[r][c];
      igtl::TransformMessage::Pointer msg = igtl::TransformMessage::New();
      msg->SetDeviceName(name.c_str());
      msg->SetMatrix(m);
      msg->Pack();
      socket->Send(msg->GetPackPointer(), msg->GetPackSize());
      emit("{\"event\":\"sent\",\"type\":\"TRANSFORM\"}");
    } else if (command == "position") {
      float p[3], q[4];
      in >> p[0] >> p[1] >> p[2] >> q[0] >> q[1] >> q[2] >> q[3];
      igtl::PositionMessage::Pointer msg = igtl::PositionMessage::New();
      msg->SetDeviceName(name.c_str());
      msg->SetPosition(p);
      msg->SetQuaternion(q);
      msg->Pack();
      socket->Send(msg->GetPackPointer(), msg->GetPackSize());
      emit("{\"event\":\"sent\",\"type\":\"POSITION\"}");
    }
  }
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s HOST PORT\n", argv[0]);
    return 2;
  }
  igtl::ClientSocket::Pointer socket = igtl::ClientSocket::New();
  if (socket->ConnectToServer(argv[1], std::atoi(argv[2])) != 0) {
    std::fprintf(stderr, "cannot connect to %s:%s\n", argv[1], argv[2]);
    return 1;
  }
  emit("{\"event\":\"connected\"}");
  std::thread commands(read_commands, socket.GetPointer());
  commands.detach();
  while (true) {
    igtl::MessageHeader::Pointer header = igtl::MessageHeader::New();
    header->InitPack();
    int received = socket->Receive(header->GetPackPointer(), header->GetPackSize());
    if (received != header->GetPackSize()) break;
    header->Unpack();
    std::string type = header->GetDeviceType();
    if (type == "POLYDATA") {
      igtl::PolyDataMessage::Pointer msg = igtl::PolyDataMessage::New();
      bool crc = receive_body(socket, header, msg);
      emit(polydata_json(msg, crc));
    } else if (type == "TRANSFORM") {
      igtl::TransformMessage::Pointer msg = igtl::TransformMessage::New();
      bool crc = receive_body(socket, header, msg);
      emit(transform_json(msg, crc));
    } else if (type == "POINT") {
      igtl::PointMessage::Pointer msg = igtl::PointMessage::New();
      bool crc = receive_body(socket, header, msg);
      emit(point_json(msg, crc));
    } else {
      socket->Skip(header->GetBodySizeToRead(), 1);
      emit("{\"type\":" + quoted(type.c_str()) + ",\"name\":" +
           quoted(header->GetDeviceName()) + ",\"bytes\":" +
           std::to_string(header->GetBodySizeToRead()) + "}");
    }
  }
  emit("{\"event\":\"closed\"}");
  std::fflush(stdout);
  std::_Exit(0);  // the command thread may still block on stdin
}
