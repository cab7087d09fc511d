// The records of a shared session, as holo/session/records.py has them: who is in it,
// where models stand, what was drawn, and the latest-value (ephemeral) channels.
//
// Immutable, like the Python records (frozen dataclasses): the fold replaces a record,
// never changes one, so copying a state's containers copies the state. Poses and points
// are in the glTF convention (Frames.cs converts for Unity): an anchor pose maps the model
// frame to the room frame, annotation points are in their model's frame (metres),
// telestration points are normalised image coordinates. Roles, shapes and channels are the
// strings the Python side uses, so a record compares with the shared vectors as is.
using System;
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    /// <summary>The role names of holo.v1 Role (holo/wire/session.py ROLE_NAMES).</summary>
    public static class Roles
    {
        public const string Presenter = "presenter";
        public const string Expert = "expert";
        public const string Observer = "observer";
        public const string Radiologist = "radiologist";

        static readonly string[] ByValue = { "", Presenter, Expert, Observer, Radiologist };

        /// <summary>The name of a holo.v1.Role value; "" for ROLE_UNSPECIFIED or an unknown
        /// value (a newer server's role this build does not know).</summary>
        public static string FromWire(int value)
        {
            return value >= 0 && value < ByValue.Length ? ByValue[value] : "";
        }
    }

    /// <summary>One participant. <see cref="Present"/> is false while it is away. (The
    /// token subject stays on the server: clients never hold it.)</summary>
    public sealed class Participant
    {
        public string ParticipantId { get; private set; }
        public string Role { get; private set; }
        public string DisplayName { get; private set; }
        public bool Present { get; private set; }

        public Participant(string participantId, string role, string displayName, bool present = true)
        {
            ParticipantId = participantId ?? "";
            Role = role ?? "";
            DisplayName = displayName ?? "";
            Present = present;
        }

        public Participant WithPresent(bool present)
        {
            return new Participant(ParticipantId, Role, DisplayName, present);
        }
    }

    /// <summary>A model placed in the session at <see cref="AnchorPose"/> (model -> room,
    /// glTF convention). <see cref="TNs"/>: when that pose was committed, where a timeline
    /// knows it (0 otherwise; never on the wire).</summary>
    public sealed class SceneModel
    {
        public string ModelId { get; private set; }
        public Pose AnchorPose { get; private set; }
        public long TNs { get; private set; }
        /// <summary>Set when the pose came from a registration (Register): its errors;
        /// null for a placement by hand.</summary>
        public Registration Registration { get; private set; }

        public SceneModel(string modelId, Pose anchorPose, long tNs = 0, Registration registration = null)
        {
            ModelId = modelId ?? "";
            AnchorPose = anchorPose;
            TNs = tNs;
            Registration = registration;
        }

        public SceneModel WithTNs(long tNs) { return new SceneModel(ModelId, AnchorPose, tNs, Registration); }
    }

    /// <summary>How far off a registered anchor may be, in millimetres (holo.v1
    /// Registration): what a headset shows the surgeon before trusting the hologram.</summary>
    public sealed class Registration
    {
        public double[] FiducialErrorsMm { get; private set; }
        public double FreRmsMm { get; private set; }
        /// <summary>The 95 % bound of the target registration error at each target.</summary>
        public double[] Tre95Mm { get; private set; }
        public int SurfacePointsUsed { get; private set; }
        public double SurfaceRmsMm { get; private set; }
        /// <summary>False: over the server's limits (applied only because the participant in
        /// control asked); <see cref="Reasons"/> say which.</summary>
        public bool Accepted { get; private set; }
        public string[] Reasons { get; private set; }

        public Registration(double[] fiducialErrorsMm, double freRmsMm, double[] tre95Mm,
            int surfacePointsUsed, double surfaceRmsMm, bool accepted, string[] reasons)
        {
            FiducialErrorsMm = fiducialErrorsMm ?? new double[0];
            FreRmsMm = freRmsMm;
            Tre95Mm = tre95Mm ?? new double[0];
            SurfacePointsUsed = surfacePointsUsed;
            SurfaceRmsMm = surfaceRmsMm;
            Accepted = accepted;
            Reasons = reasons ?? new string[0];
        }

        /// <summary>The largest 95 % target error: the figure to show.</summary>
        public double WorstTre95Mm
        {
            get { double worst = 0; foreach (double e in Tre95Mm) worst = Math.Max(worst, e); return worst; }
        }
    }

    /// <summary>Annotation shapes (holo.v1 Annotation's oneof, by the Python names).</summary>
    public static class Shapes
    {
        public const string Marker = "marker";
        public const string Stroke = "stroke";
        public const string Label = "label";
    }

    /// <summary>A marker (one point), a stroke (two or more points) or a text label (one
    /// point and <see cref="Text"/>), anchored to a loaded model; points in that model's
    /// frame (glTF convention, metres).</summary>
    public sealed class Annotation
    {
        public string AnnotationId { get; private set; }
        public string ModelId { get; private set; }
        public string Author { get; private set; }
        public string Shape { get; private set; }
        public IList<Vec3> Points { get; private set; }
        public string Text { get; private set; }

        public Annotation(string annotationId, string modelId, string author, string shape, IEnumerable<Vec3> points, string text = "")
        {
            AnnotationId = annotationId ?? "";
            ModelId = modelId ?? "";
            Author = author ?? "";
            Shape = shape ?? "";
            Points = new List<Vec3>(points).AsReadOnly();
            Text = text ?? "";
        }
    }

    /// <summary>A stroke drawn over the video frame of <see cref="TrackId"/> at session time
    /// <see cref="FrameTNs"/>; points normalised image coordinates, <see cref="Rgb"/>
    /// 0xRRGGBB.</summary>
    public sealed class Telestration
    {
        public string TelestrationId { get; private set; }
        public string TrackId { get; private set; }
        public long FrameTNs { get; private set; }
        public string Author { get; private set; }
        public IList<Vec2> Points { get; private set; }
        public uint Rgb { get; private set; }

        public Telestration(string telestrationId, string trackId, long frameTNs, string author, IEnumerable<Vec2> points, uint rgb = 0)
        {
            TelestrationId = telestrationId ?? "";
            TrackId = trackId ?? "";
            FrameTNs = frameTNs;
            Author = author ?? "";
            Points = new List<Vec2>(points).AsReadOnly();
            Rgb = rgb;
        }
    }

    /// <summary>The ephemeral channels (latest value per participant); heartbeat carries
    /// no value (holo/session/records.py EPHEMERAL_CHANNELS).</summary>
    public static class Channels
    {
        public const string HeadPose = "head_pose";
        public const string Pointer = "pointer";
        public const string Drag = "drag";
        public const string Heartbeat = "heartbeat";
    }

    /// <summary>The newest value of one participant's channel: a head pose, a pointer ray
    /// (room frame), a live drag (a model at a pose not yet committed) or a heartbeat.</summary>
    public sealed class EphemeralUpdate
    {
        public string ParticipantId { get; private set; }
        public string Channel { get; private set; }
        public long TNs { get; private set; }
        public Pose HeadPose { get; private set; }
        public Ray Pointer { get; private set; }
        public SceneModel Drag { get; private set; }

        EphemeralUpdate(string participantId, string channel, long tNs)
        {
            ParticipantId = participantId ?? "";
            Channel = channel;
            TNs = tNs;
        }

        public static EphemeralUpdate ForHeadPose(string participantId, long tNs, Pose pose)
        {
            return new EphemeralUpdate(participantId, Channels.HeadPose, tNs) { HeadPose = pose };
        }

        public static EphemeralUpdate ForPointer(string participantId, long tNs, Ray ray)
        {
            return new EphemeralUpdate(participantId, Channels.Pointer, tNs) { Pointer = ray };
        }

        public static EphemeralUpdate ForDrag(string participantId, long tNs, SceneModel model)
        {
            if (model == null) throw new ArgumentNullException("model");
            return new EphemeralUpdate(participantId, Channels.Drag, tNs) { Drag = model };
        }

        public static EphemeralUpdate ForHeartbeat(string participantId, long tNs)
        {
            return new EphemeralUpdate(participantId, Channels.Heartbeat, tNs);
        }
    }
}
