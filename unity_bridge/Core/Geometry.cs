// Plain geometry of the core: vectors, unit quaternions, rigid poses and rays, in doubles
// as on the wire (holo.v1 Vec3 and Quat are doubles). Not Unity's types: the core runs
// where there is no UnityEngine (the tests, a server-side tool); the Unity layer copies
// these into Vector3 and Quaternion (floats) at the last moment.
//
// Nothing here knows a frame: a Pose is "a rigid transform in some convention". Which
// convention a value is in, and the one conversion between glTF and Unity, is Frames.cs.
using System;
using System.Globalization;

namespace Holo.Bridge.Core
{
    /// <summary>A 3-D vector (metres for points).</summary>
    public struct Vec3 : IEquatable<Vec3>
    {
        public readonly double X, Y, Z;

        public Vec3(double x, double y, double z)
        {
            X = x;
            Y = y;
            Z = z;
        }

        public static readonly Vec3 Zero = new Vec3(0, 0, 0);

        public static Vec3 operator +(Vec3 a, Vec3 b) { return new Vec3(a.X + b.X, a.Y + b.Y, a.Z + b.Z); }
        public static Vec3 operator -(Vec3 a, Vec3 b) { return new Vec3(a.X - b.X, a.Y - b.Y, a.Z - b.Z); }
        public static Vec3 operator -(Vec3 a) { return new Vec3(-a.X, -a.Y, -a.Z); }
        public static Vec3 operator *(double s, Vec3 a) { return new Vec3(s * a.X, s * a.Y, s * a.Z); }

        public static double Dot(Vec3 a, Vec3 b) { return a.X * b.X + a.Y * b.Y + a.Z * b.Z; }

        public static Vec3 Cross(Vec3 a, Vec3 b)
        {
            return new Vec3(a.Y * b.Z - a.Z * b.Y, a.Z * b.X - a.X * b.Z, a.X * b.Y - a.Y * b.X);
        }

        public double Length { get { return Math.Sqrt(Dot(this, this)); } }

        public bool IsFinite
        {
            get { return !(double.IsNaN(X) || double.IsInfinity(X) || double.IsNaN(Y) || double.IsInfinity(Y) || double.IsNaN(Z) || double.IsInfinity(Z)); }
        }

        public bool Equals(Vec3 other) { return X == other.X && Y == other.Y && Z == other.Z; }
        public override bool Equals(object obj) { return obj is Vec3 && Equals((Vec3)obj); }
        public override int GetHashCode() { return X.GetHashCode() ^ (Y.GetHashCode() * 397) ^ (Z.GetHashCode() * 7919); }

        public override string ToString()
        {
            return string.Format(CultureInfo.InvariantCulture, "({0:R}, {1:R}, {2:R})", X, Y, Z);
        }
    }

    /// <summary>A 2-D point: normalised image coordinates (u, v) in [0, 1], (0, 0) top left,
    /// as telestrations carry them.</summary>
    public struct Vec2 : IEquatable<Vec2>
    {
        public readonly double X, Y;

        public Vec2(double x, double y)
        {
            X = x;
            Y = y;
        }

        public bool Equals(Vec2 other) { return X == other.X && Y == other.Y; }
        public override bool Equals(object obj) { return obj is Vec2 && Equals((Vec2)obj); }
        public override int GetHashCode() { return X.GetHashCode() ^ (Y.GetHashCode() * 397); }
    }

    /// <summary>A quaternion (x, y, z, w), w the scalar part, as glTF and holo.v1 order it.
    /// Rotations are unit quaternions; q and -q are the same rotation.</summary>
    public struct Quat : IEquatable<Quat>
    {
        public readonly double X, Y, Z, W;

        public Quat(double x, double y, double z, double w)
        {
            X = x;
            Y = y;
            Z = z;
            W = w;
        }

        public static readonly Quat Identity = new Quat(0, 0, 0, 1);

        public double Norm { get { return Math.Sqrt(X * X + Y * Y + Z * Z + W * W); } }

        /// <summary>This quaternion scaled to unit length, as every receiver of a pose does
        /// (common.proto, Quat; holo/wire/common.py pose_from_message): a sender's rounding
        /// must not scale what it rotates. A zero or non-finite quaternion has no rotation:
        /// an error naming it.</summary>
        public Quat Normalized()
        {
            double n = Norm;
            if (n == 0 || double.IsNaN(n) || double.IsInfinity(n))
            {
                throw new ArgumentException(
                    "the rotation must be a non-zero, finite quaternion (x, y, z, w); identity is (0, 0, 0, 1), not " + this);
            }
            return new Quat(X / n, Y / n, Z / n, W / n);
        }

        public Quat Conjugate() { return new Quat(-X, -Y, -Z, W); }

        /// <summary>The Hamilton product: applying b first, then a.</summary>
        public static Quat operator *(Quat a, Quat b)
        {
            return new Quat(
                a.W * b.X + a.X * b.W + a.Y * b.Z - a.Z * b.Y,
                a.W * b.Y - a.X * b.Z + a.Y * b.W + a.Z * b.X,
                a.W * b.Z + a.X * b.Y - a.Y * b.X + a.Z * b.W,
                a.W * b.W - a.X * b.X - a.Y * b.Y - a.Z * b.Z);
        }

        /// <summary>v rotated by this (unit) quaternion: q v q*, expanded.</summary>
        public Vec3 Rotate(Vec3 v)
        {
            var u = new Vec3(X, Y, Z);
            Vec3 t = 2.0 * Vec3.Cross(u, v);
            return v + W * t + Vec3.Cross(u, t);
        }

        /// <summary>The angle (radians, 0 to pi) between two rotations; 0 for q and -q.</summary>
        public static double Angle(Quat a, Quat b)
        {
            double dot = Math.Abs(a.X * b.X + a.Y * b.Y + a.Z * b.Z + a.W * b.W);
            return 2.0 * Math.Acos(Math.Min(1.0, dot));
        }

        public bool Equals(Quat other) { return X == other.X && Y == other.Y && Z == other.Z && W == other.W; }
        public override bool Equals(object obj) { return obj is Quat && Equals((Quat)obj); }
        public override int GetHashCode() { return X.GetHashCode() ^ (Y.GetHashCode() * 397) ^ (Z.GetHashCode() * 7919) ^ (W.GetHashCode() * 104729); }

        public override string ToString()
        {
            return string.Format(CultureInfo.InvariantCulture, "({0:R}, {1:R}, {2:R}, {3:R})", X, Y, Z, W);
        }
    }

    /// <summary>A rigid transform: rotate by <see cref="Rotation"/>, then move by
    /// <see cref="Position"/> (metres). An anchor pose maps the model frame to the room
    /// frame; a head pose is the head in the room frame.</summary>
    public struct Pose : IEquatable<Pose>
    {
        public readonly Vec3 Position;
        public readonly Quat Rotation;

        public Pose(Vec3 position, Quat rotation)
        {
            Position = position;
            Rotation = rotation;
        }

        public static readonly Pose Identity = new Pose(Vec3.Zero, Quat.Identity);

        /// <summary>A point of the inner frame in the outer frame.</summary>
        public Vec3 TransformPoint(Vec3 p) { return Rotation.Rotate(p) + Position; }

        /// <summary>A direction of the inner frame in the outer frame (no translation).</summary>
        public Vec3 TransformDirection(Vec3 d) { return Rotation.Rotate(d); }

        /// <summary>a after b: b maps frame C to B, a maps B to A; the result maps C to A.</summary>
        public static Pose operator *(Pose a, Pose b)
        {
            return new Pose(a.TransformPoint(b.Position), a.Rotation * b.Rotation);
        }

        public Pose Inverse()
        {
            Quat inv = Rotation.Conjugate();
            return new Pose(-inv.Rotate(Position), inv);
        }

        public bool Equals(Pose other) { return Position.Equals(other.Position) && Rotation.Equals(other.Rotation); }
        public override bool Equals(object obj) { return obj is Pose && Equals((Pose)obj); }
        public override int GetHashCode() { return Position.GetHashCode() ^ (Rotation.GetHashCode() * 31); }
        public override string ToString() { return "Pose(" + Position + ", " + Rotation + ")"; }
    }

    /// <summary>A pointer ray: an origin (metres) and a non-zero direction (not necessarily
    /// unit length: holo.v1 Ray does not require it).</summary>
    public struct Ray : IEquatable<Ray>
    {
        public readonly Vec3 Origin;
        public readonly Vec3 Direction;

        public Ray(Vec3 origin, Vec3 direction)
        {
            Origin = origin;
            Direction = direction;
        }

        public bool Equals(Ray other) { return Origin.Equals(other.Origin) && Direction.Equals(other.Direction); }
        public override bool Equals(object obj) { return obj is Ray && Equals((Ray)obj); }
        public override int GetHashCode() { return Origin.GetHashCode() ^ (Direction.GetHashCode() * 31); }
        public override string ToString() { return "Ray(" + Origin + ", " + Direction + ")"; }
    }
}
