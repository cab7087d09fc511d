// The one place the bridge converts between frames (ARCHITECTURE.md, "Coordinate frames").
//
// Everything on the wire is in the glTF convention: right-handed, +Y up, metres,
// quaternions (x, y, z, w). Unity is left-handed (+Y up, +Z forward, metres). glTFast
// imports a model's meshes by negating X: a position (x, y, z) becomes (-x, y, z) and a
// rotation (x, y, z, w) becomes (x, -y, -z, w). Poses take the same rule here, so a model
// that glTFast imported and the anchor pose that places it agree: glTF point p, placed by
// anchor A, lands where Unity point M(p), placed by the converted anchor, lands, mirrored.
//
// Why that rotation rule: the mirror M = diag(-1, 1, 1) conjugates a rotation matrix R
// into M R M, a rotation again (det M = -1 twice). For a rotation of angle t about unit
// axis a, M R M turns by the same t about det(M) M a = (ax, -ay, -az): the quaternion
// (sin(t/2) a, cos(t/2)) becomes (x, -y, -z, w). The vector part flips with the
// handedness; the angle keeps its sign as seen from the mirrored axis.
//
// The mirror is its own inverse, so ToUnity and ToGltf are the same operation; both names
// exist so a call says which way a value goes. The room frame is the presenter's tracking
// space (OpenXR stage on a native headset, WebXR local-floor in the page): the Unity layer
// maps the session's room frame to the XR Origin's tracking space, and anchor_pose (model
// -> room) to the model's local transform under it. Rays convert their origin as a point
// and their direction as a vector (the same negated X). Unity-frame values never go on the
// wire: every intent converts back with ToGltf here.
namespace Holo.Bridge.Core
{
    public static class Frames
    {
        /// <summary>A glTF point or direction in Unity's frame: (-x, y, z).</summary>
        public static Vec3 ToUnity(Vec3 gltf) { return new Vec3(-gltf.X, gltf.Y, gltf.Z); }

        /// <summary>A Unity point or direction in the glTF frame: (-x, y, z).</summary>
        public static Vec3 ToGltf(Vec3 unity) { return new Vec3(-unity.X, unity.Y, unity.Z); }

        /// <summary>A glTF rotation in Unity's frame: (x, -y, -z, w).</summary>
        public static Quat ToUnity(Quat gltf) { return new Quat(gltf.X, -gltf.Y, -gltf.Z, gltf.W); }

        /// <summary>A Unity rotation in the glTF frame: (x, -y, -z, w).</summary>
        public static Quat ToGltf(Quat unity) { return new Quat(unity.X, -unity.Y, -unity.Z, unity.W); }

        public static Pose ToUnity(Pose gltf) { return new Pose(ToUnity(gltf.Position), ToUnity(gltf.Rotation)); }

        public static Pose ToGltf(Pose unity) { return new Pose(ToGltf(unity.Position), ToGltf(unity.Rotation)); }

        public static Ray ToUnity(Ray gltf) { return new Ray(ToUnity(gltf.Origin), ToUnity(gltf.Direction)); }

        public static Ray ToGltf(Ray unity) { return new Ray(ToGltf(unity.Origin), ToGltf(unity.Direction)); }
    }
}
