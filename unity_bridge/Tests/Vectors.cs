// The shared test vectors (tests/vectors/*.json in the holo repository), written by the
// Python generators beside them and read here in their plain JSON forms.
//
// Where they are: the folder named by the environment variable HOLO_VECTORS. The
// repository's test (tests/test_unity_core.py) sets it to tests/vectors; in a Unity
// project, set it to a holo checkout's tests/vectors before running the tests (the
// package installed from git holds only unity_bridge/). Without it the vector tests are
// reported as ignored, with this reason, never silently passed; the unit tests run anyway.
using System;
using System.Collections.Generic;
using System.IO;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    public static class Vectors
    {
        public const string Variable = "HOLO_VECTORS";
        static readonly Dictionary<string, object> Cache = new Dictionary<string, object>();

        /// <summary>The parsed vector file <paramref name="name"/> (e.g. "session_fold.json");
        /// ignores the calling test when HOLO_VECTORS is not set, fails it when the file is
        /// missing.</summary>
        public static object Load(string name)
        {
            string folder = Environment.GetEnvironmentVariable(Variable);
            if (string.IsNullOrEmpty(folder))
            {
                Assert.Ignore(Variable + " is not set: point it at the holo repository's tests/vectors to run the shared-vector tests");
            }
            string path = Path.Combine(folder, name);
            if (!File.Exists(path)) Assert.Fail("no vector file " + path + "; regenerate it with python tests/vectors/" + Path.ChangeExtension(name, ".py"));
            object parsed;
            if (!Cache.TryGetValue(path, out parsed))
            {
                parsed = Json.Parse(File.ReadAllText(path));
                Cache[path] = parsed;
            }
            return parsed;
        }

        // The plain forms of tests/vectors/session_fold.py -----------------------------------

        public static Participant Participant(object p)
        {
            return new Participant(J.Str(p, "participant_id"), J.Str(p, "role"), J.Str(p, "display_name"), J.Bool(p, "present"));
        }

        /// <summary>{"model_id", "anchor_pose"} (SceneModel.to_json).</summary>
        public static SceneModel Model(object m, long tNs = 0)
        {
            return new SceneModel(J.Str(m, "model_id"), J.Pose(J.At(m, "anchor_pose")), tNs);
        }

        public static Annotation Annotation(object a)
        {
            var points = new List<Vec3>();
            foreach (object p in J.Arr(a, "points")) points.Add(J.Vec3(p));
            return new Annotation(J.Str(a, "annotation_id"), J.Str(a, "model_id"), J.Str(a, "author"), J.Str(a, "shape"), points, J.Str(a, "text"));
        }

        public static Telestration Telestration(object t)
        {
            var points = new List<Vec2>();
            foreach (object p in J.Arr(t, "points")) points.Add(new Vec2(J.Num(J.Arr(p)[0]), J.Num(J.Arr(p)[1])));
            return new Telestration(J.Str(t, "telestration_id"), J.Str(t, "track_id"), J.Long(t, "frame_t_ns"), J.Str(t, "author"), points, (uint)J.Long(t, "rgb"));
        }

        /// <summary>An event in the layout of holo Event.encode: seq, t_ns, actor, kind, data.</summary>
        public static SessionEvent Event(object e)
        {
            long seq = J.Long(e, "seq");
            long t = J.Long(e, "t_ns");
            string actor = J.Str(e, "actor");
            string kind = J.Str(e, "kind");
            object data = J.At(e, "data");
            switch (kind)
            {
                case EventKinds.Joined: return SessionEvent.Joined(seq, t, actor, Participant(J.At(data, "participant")));
                case EventKinds.ModelLoaded:
                case EventKinds.AnchorCommitted: return SessionEvent.ForModel(kind, seq, t, actor, Model(data));
                case EventKinds.AnnotationAdded: return SessionEvent.AnnotationAdded(seq, t, actor, Annotation(J.At(data, "annotation")));
                case EventKinds.AnnotationRemoved: return SessionEvent.AnnotationRemoved(seq, t, actor, J.Str(data, "annotation_id"));
                case EventKinds.TelestrationAdded: return SessionEvent.TelestrationAdded(seq, t, actor, Telestration(J.At(data, "telestration")));
                default:
                    if (EventKinds.IsParticipantKind(kind)) return SessionEvent.ForParticipant(kind, seq, t, actor, J.Str(data, "participant_id"));
                    return SessionEvent.Unknown(seq, t, actor, kind);
            }
        }

        /// <summary>A plain snapshot: seq, t_ns and each collection as a list in order.</summary>
        public static SessionSnapshot Snapshot(object s)
        {
            var snapshot = new SessionSnapshot { Seq = J.Long(s, "seq"), TNs = J.Long(s, "t_ns"), Controller = J.Str(s, "controller") };
            foreach (object p in J.Arr(s, "participants")) snapshot.Participants.Add(Participant(p));
            foreach (object m in J.Arr(s, "models")) snapshot.Models.Add(Model(m));
            foreach (object a in J.Arr(s, "annotations")) snapshot.Annotations.Add(Annotation(a));
            foreach (object c in J.Arr(s, "control_requests")) snapshot.ControlRequests.Add((string)c);
            foreach (object t in J.Arr(s, "telestrations")) snapshot.Telestrations.Add(Telestration(t));
            return snapshot;
        }

        /// <summary>An ephemeral update in the layout of EphemeralUpdate.to_json.</summary>
        public static EphemeralUpdate Update(object u)
        {
            string pid = J.Str(u, "participant_id");
            string channel = J.Str(u, "channel");
            long t = J.Long(u, "t_ns");
            object value = J.At(u, "value");
            switch (channel)
            {
                case Channels.HeadPose: return EphemeralUpdate.ForHeadPose(pid, t, J.Pose(J.At(value, "head_pose")));
                case Channels.Pointer: return EphemeralUpdate.ForPointer(pid, t, new Ray(J.Vec3(J.At(value, "origin")), J.Vec3(J.At(value, "direction"))));
                case Channels.Drag: return EphemeralUpdate.ForDrag(pid, t, Model(value));
                case Channels.Heartbeat: return EphemeralUpdate.ForHeartbeat(pid, t);
                default: throw new ArgumentException("unknown channel " + channel);
            }
        }

        // Comparing a state with an expected one -----------------------------------------------

        /// <summary>Asserts <paramref name="state"/> equals <paramref name="expected"/>, a
        /// state in the layout of SessionState.public_dict(), and, when given, holds each
        /// collection in <paramref name="order"/> ({"participants": [ids], ...}).</summary>
        public static void AssertState(object expected, SessionState state, object order, string where)
        {
            Assert.AreEqual(J.Long(expected, "seq"), state.Seq, where + ": seq");
            Assert.AreEqual(J.Str(expected, "controller"), state.Controller, where + ": controller");
            var requests = new List<string>();
            foreach (object r in J.Arr(expected, "control_requests")) requests.Add((string)r);
            CollectionAssert.AreEqual(requests, state.ControlRequests, where + ": control_requests");

            Dictionary<string, object> participants = J.Obj(expected, "participants");
            Assert.AreEqual(participants.Count, state.Participants.Count, where + ": participants");
            foreach (KeyValuePair<string, object> kv in participants)
            {
                Participant p = state.Participants.Get(kv.Key);
                Assert.IsNotNull(p, where + ": participant " + kv.Key);
                Assert.AreEqual(J.Str(kv.Value, "role"), p.Role, where + ": role of " + kv.Key);
                Assert.AreEqual(J.Str(kv.Value, "display_name"), p.DisplayName, where + ": name of " + kv.Key);
                Assert.AreEqual(J.Bool(kv.Value, "present"), p.Present, where + ": presence of " + kv.Key);
            }

            Dictionary<string, object> models = J.Obj(expected, "models");
            Assert.AreEqual(models.Count, state.Models.Count, where + ": models");
            foreach (KeyValuePair<string, object> kv in models)
            {
                SceneModel m = state.Models.Get(kv.Key);
                Assert.IsNotNull(m, where + ": model " + kv.Key);
                AssertPose(J.Pose(J.At(kv.Value, "anchor_pose")), m.AnchorPose, 0, where + ": anchor of " + kv.Key);
            }

            Dictionary<string, object> annotations = J.Obj(expected, "annotations");
            Assert.AreEqual(annotations.Count, state.Annotations.Count, where + ": annotations");
            foreach (KeyValuePair<string, object> kv in annotations)
            {
                Annotation a = state.Annotations.Get(kv.Key);
                Assert.IsNotNull(a, where + ": annotation " + kv.Key);
                Annotation e = Annotation(kv.Value);
                Assert.AreEqual(e.ModelId, a.ModelId, where + ": model of " + kv.Key);
                Assert.AreEqual(e.Author, a.Author, where + ": author of " + kv.Key);
                Assert.AreEqual(e.Shape, a.Shape, where + ": shape of " + kv.Key);
                Assert.AreEqual(e.Text, a.Text, where + ": text of " + kv.Key);
                CollectionAssert.AreEqual(e.Points, a.Points, where + ": points of " + kv.Key);
            }

            Dictionary<string, object> telestrations = J.Obj(expected, "telestrations");
            Assert.AreEqual(telestrations.Count, state.Telestrations.Count, where + ": telestrations");
            foreach (KeyValuePair<string, object> kv in telestrations)
            {
                Telestration t = state.Telestrations.Get(kv.Key);
                Assert.IsNotNull(t, where + ": telestration " + kv.Key);
                Telestration e = Telestration(kv.Value);
                Assert.AreEqual(e.TrackId, t.TrackId, where + ": track of " + kv.Key);
                Assert.AreEqual(e.FrameTNs, t.FrameTNs, where + ": frame of " + kv.Key);
                Assert.AreEqual(e.Author, t.Author, where + ": author of " + kv.Key);
                Assert.AreEqual(e.Rgb, t.Rgb, where + ": colour of " + kv.Key);
                CollectionAssert.AreEqual(e.Points, t.Points, where + ": points of " + kv.Key);
            }

            if (order == null) return;
            CollectionAssert.AreEqual(Strings(J.Arr(order, "participants")), state.Participants.Keys, where + ": participant order");
            CollectionAssert.AreEqual(Strings(J.Arr(order, "models")), state.Models.Keys, where + ": model order");
            CollectionAssert.AreEqual(Strings(J.Arr(order, "annotations")), state.Annotations.Keys, where + ": annotation order");
            CollectionAssert.AreEqual(Strings(J.Arr(order, "telestrations")), state.Telestrations.Keys, where + ": telestration order");
        }

        public static List<string> Strings(List<object> values)
        {
            var result = new List<string>();
            foreach (object v in values) result.Add((string)v);
            return result;
        }

        /// <summary>Poses equal within <paramref name="tolerance"/> per component (0: exactly).</summary>
        public static void AssertPose(Pose expected, Pose actual, double tolerance, string where)
        {
            AssertVec(expected.Position, actual.Position, tolerance, where + " (position)");
            Assert.AreEqual(expected.Rotation.X, actual.Rotation.X, tolerance, where + " (rotation x)");
            Assert.AreEqual(expected.Rotation.Y, actual.Rotation.Y, tolerance, where + " (rotation y)");
            Assert.AreEqual(expected.Rotation.Z, actual.Rotation.Z, tolerance, where + " (rotation z)");
            Assert.AreEqual(expected.Rotation.W, actual.Rotation.W, tolerance, where + " (rotation w)");
        }

        public static void AssertVec(Vec3 expected, Vec3 actual, double tolerance, string where)
        {
            Assert.AreEqual(expected.X, actual.X, tolerance, where + " x");
            Assert.AreEqual(expected.Y, actual.Y, tolerance, where + " y");
            Assert.AreEqual(expected.Z, actual.Z, tolerance, where + " z");
        }
    }
}
