// holo.v1 messages <-> the core's plain records: the one place the Unity layer touches both
// (as holo/wire/session.py on the Python side, and the same decisions): a quaternion is
// renormalised on receipt (common.proto, Quat), a role number becomes its name, an
// annotation's oneof becomes its shape and points. Values stay in the glTF convention
// here; Frames (Core/Frames.cs) converts for Unity, in the components that place things.
//
// NOT COMPILED HERE: needs Google.Protobuf and the generated messages (Runtime/Generated).
using System.Collections.Generic;
using Holo.Bridge.Core;
using V1 = Holo.V1;

namespace Holo.Bridge
{
    public static class WireConvert
    {
        // Received ------------------------------------------------------------------------

        public static Vec3 Vec(V1.Vec3 v)
        {
            return v == null ? Vec3.Zero : new Vec3(v.X, v.Y, v.Z);
        }

        public static Pose Pose(V1.Pose p)
        {
            if (p == null || p.Rotation == null) throw new HoloBridgeException("a pose without a rotation; identity is (0, 0, 0, 1)");
            var q = new Quat(p.Rotation.X, p.Rotation.Y, p.Rotation.Z, p.Rotation.W).Normalized();
            return new Pose(Vec(p.Position), q);
        }

        public static Participant Participant(V1.Participant p)
        {
            return new Participant(Id(p.ParticipantId), Roles.FromWire((int)p.Role), p.DisplayName, p.Present);
        }

        public static SceneModel Model(V1.SceneModel m, long tNs = 0)
        {
            Registration registration = null;
            if (m.Registration != null)
            {
                var r = m.Registration;
                registration = new Registration(
                    new List<double>(r.FiducialErrorsMm).ToArray(), r.FreRmsMm,
                    new List<double>(r.Tre95Mm).ToArray(), (int)r.SurfacePointsUsed,
                    r.SurfaceRmsMm, r.Accepted, new List<string>(r.Reasons).ToArray());
            }
            return new SceneModel(m.ModelId == null ? "" : m.ModelId.Value, Pose(m.AnchorPose), tNs, registration);
        }

        public static Annotation Annotation(V1.Annotation a)
        {
            var points = new List<Vec3>();
            string shape, text = "";
            switch (a.ShapeCase)
            {
                case V1.Annotation.ShapeOneofCase.Marker:
                    shape = Shapes.Marker;
                    points.Add(Vec(a.Marker.Position));
                    break;
                case V1.Annotation.ShapeOneofCase.Stroke:
                    shape = Shapes.Stroke;
                    foreach (V1.Vec3 p in a.Stroke.Points) points.Add(Vec(p));
                    break;
                case V1.Annotation.ShapeOneofCase.Label:
                    shape = Shapes.Label;
                    points.Add(Vec(a.Label.Position));
                    text = a.Label.Text;
                    break;
                default:
                    throw new HoloBridgeException("annotation " + a.AnnotationId + " is neither a marker, a stroke nor a label; update the client");
            }
            return new Annotation(a.AnnotationId, a.ModelId == null ? "" : a.ModelId.Value, Id(a.Author), shape, points, text);
        }

        public static Telestration Telestration(V1.Telestration t)
        {
            var points = new List<Vec2>();
            foreach (V1.Vec2 p in t.Points) points.Add(new Vec2(p.X, p.Y));
            return new Telestration(t.TelestrationId, t.TrackId, t.FrameTNs, Id(t.Author), points, t.Rgb);
        }

        public static SessionSnapshot Snapshot(V1.SessionSnapshot s)
        {
            var snapshot = new SessionSnapshot { Seq = (long)s.Seq, TNs = s.TNs, Controller = Id(s.Controller) };
            foreach (V1.Participant p in s.Participants) snapshot.Participants.Add(Participant(p));
            foreach (V1.SceneModel m in s.Models) snapshot.Models.Add(Model(m));
            foreach (V1.Annotation a in s.Annotations) snapshot.Annotations.Add(Annotation(a));
            foreach (V1.ParticipantId p in s.ControlRequests) snapshot.ControlRequests.Add(p.Value);
            foreach (V1.Telestration t in s.Telestrations) snapshot.Telestrations.Add(Telestration(t));
            return snapshot;
        }

        /// <summary>An event as the client folds it (holo/wire/session.py event_from_message).</summary>
        public static SessionEvent Event(V1.SessionEvent m)
        {
            long seq = (long)m.Seq, t = m.TNs;
            string actor = Id(m.Actor);
            switch (m.KindCase)
            {
                case V1.SessionEvent.KindOneofCase.Joined: return SessionEvent.Joined(seq, t, actor, Participant(m.Joined));
                case V1.SessionEvent.KindOneofCase.Left: return SessionEvent.ForParticipant(EventKinds.Left, seq, t, actor, Id(m.Left));
                case V1.SessionEvent.KindOneofCase.Away: return SessionEvent.ForParticipant(EventKinds.Away, seq, t, actor, Id(m.Away));
                case V1.SessionEvent.KindOneofCase.Back: return SessionEvent.ForParticipant(EventKinds.Back, seq, t, actor, Id(m.Back));
                case V1.SessionEvent.KindOneofCase.ControlRequested: return SessionEvent.ForParticipant(EventKinds.ControlRequested, seq, t, actor, Id(m.ControlRequested));
                case V1.SessionEvent.KindOneofCase.ControlGranted: return SessionEvent.ForParticipant(EventKinds.ControlGranted, seq, t, actor, Id(m.ControlGranted));
                case V1.SessionEvent.KindOneofCase.ControlRevoked: return SessionEvent.ForParticipant(EventKinds.ControlRevoked, seq, t, actor, Id(m.ControlRevoked));
                case V1.SessionEvent.KindOneofCase.ModelLoaded: return SessionEvent.ForModel(EventKinds.ModelLoaded, seq, t, actor, Model(m.ModelLoaded));
                case V1.SessionEvent.KindOneofCase.AnchorCommitted: return SessionEvent.ForModel(EventKinds.AnchorCommitted, seq, t, actor, Model(m.AnchorCommitted));
                case V1.SessionEvent.KindOneofCase.AnnotationAdded: return SessionEvent.AnnotationAdded(seq, t, actor, Annotation(m.AnnotationAdded));
                case V1.SessionEvent.KindOneofCase.AnnotationRemoved: return SessionEvent.AnnotationRemoved(seq, t, actor, m.AnnotationRemoved);
                case V1.SessionEvent.KindOneofCase.TelestrationAdded: return SessionEvent.TelestrationAdded(seq, t, actor, Telestration(m.TelestrationAdded));
                default: return SessionEvent.Unknown(seq, t, actor, m.KindCase.ToString()); // the fold refuses it, naming it
            }
        }

        /// <summary>An ephemeral value; null for a value of a channel this build does not know.</summary>
        public static EphemeralUpdate Update(V1.EphemeralUpdate m)
        {
            string pid = Id(m.ParticipantId);
            switch (m.ValueCase)
            {
                case V1.EphemeralUpdate.ValueOneofCase.HeadPose: return EphemeralUpdate.ForHeadPose(pid, m.TNs, Pose(m.HeadPose));
                case V1.EphemeralUpdate.ValueOneofCase.Pointer: return EphemeralUpdate.ForPointer(pid, m.TNs, new Ray(Vec(m.Pointer.Origin), Vec(m.Pointer.Direction)));
                case V1.EphemeralUpdate.ValueOneofCase.Drag: return EphemeralUpdate.ForDrag(pid, m.TNs, Model(m.Drag, m.TNs));
                default: return null;
            }
        }

        public static ModelManifest Manifest(V1.ModelManifest m)
        {
            var lods = new List<LevelOfDetail>();
            foreach (V1.LevelOfDetail l in m.Lods)
            {
                lods.Add(new LevelOfDetail((int)l.Index, l.Name, (long)l.Triangles, (long)l.Bytes, (long)l.CompleteAtBytes, l.PrefixSha256));
            }
            return new ModelManifest(m.ModelId == null ? "" : m.ModelId.Value, (long)m.SizeBytes, m.Sha256, lods);
        }

        static string Id(V1.ParticipantId id) { return id == null ? "" : id.Value; }

        // Sent ------------------------------------------------------------------------------

        public static V1.Vec3 Message(Vec3 v) { return new V1.Vec3 { X = v.X, Y = v.Y, Z = v.Z }; }

        public static V1.Pose Message(Pose p)
        {
            return new V1.Pose
            {
                Position = Message(p.Position),
                Rotation = new V1.Quat { X = p.Rotation.X, Y = p.Rotation.Y, Z = p.Rotation.Z, W = p.Rotation.W },
            };
        }

        public static V1.Ray Message(Ray r) { return new V1.Ray { Origin = Message(r.Origin), Direction = Message(r.Direction) }; }
    }
}
