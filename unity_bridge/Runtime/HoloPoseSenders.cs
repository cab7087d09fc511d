// The wearer in the session: the head pose from the main camera, and the pointer ray from
// an XR ray interactor (controller or hand), each relative to the room (this device's
// tracking space) and converted to the glTF convention by Core/Frames.cs.
//
// Pacing: at most 30 a second (the limit: a head pose stream is for showing where
// someone looks, and the server coalesces per participant anyway), and nothing while the
// pose holds still: a still head jitters by about 0.1 mm, so moves under 1 mm and 0.2
// degrees are not sent (the same thresholds as the web page, holo/web/src/immersive.js).
// One call at a time: a slow link drops poses rather than queueing them. Only presenters
// and experts send (observers do not point: holo/session/state.py check_intent).
//
// NOT COMPILED HERE: needs UnityEngine and the XR Interaction Toolkit (2.x, or 3.x where
// HOLO_XRI_3 is defined by the assembly definition's version define).
using System;
using Holo.Bridge.Core;
using UnityEngine;
#if HOLO_XRI_3
using UnityEngine.XR.Interaction.Toolkit.Interactors;
#else
using UnityEngine.XR.Interaction.Toolkit;
#endif
using Pose = Holo.Bridge.Core.Pose;
using Ray = Holo.Bridge.Core.Ray;

namespace Holo.Bridge
{
    /// <summary>The pacing both senders share.</summary>
    public abstract class HoloPacedSender : MonoBehaviour
    {
        public HoloSession session;
        [Tooltip("This device's tracking space (the XR Origin's Camera Offset).")]
        public Transform room;
        [Tooltip("Sends per second at most (30: the session's limit for headsets).")]
        public float maxRateHz = 30f;

        const float StillMetres = 0.001f;
        const float StillDegrees = 0.2f;

        float lastSent = float.NegativeInfinity;
        Vector3 lastPosition = new Vector3(float.NaN, 0, 0);
        Quaternion lastRotation = Quaternion.identity;
        bool sending;
        bool warned;

        protected bool MaySend()
        {
            if (session == null || !session.IsJoined || sending) return false;
            string role = session.Role;
            if (role != Roles.Presenter && role != Roles.Expert) return false;
            return Time.unscaledTime - lastSent >= 1f / maxRateHz;
        }

        /// <summary>True when the pose moved enough since the last one sent; remembers it.</summary>
        protected bool Moved(Vector3 position, Quaternion rotation)
        {
            if (!float.IsNaN(lastPosition.x) && (position - lastPosition).magnitude < StillMetres && Quaternion.Angle(rotation, lastRotation) < StillDegrees)
            {
                return false;
            }
            lastPosition = position;
            lastRotation = rotation;
            return true;
        }

        /// <summary>A world pose relative to `room`, in the glTF convention.</summary>
        protected Pose InRoom(Vector3 position, Quaternion rotation, out Vector3 local, out Quaternion localRotation)
        {
            local = room != null ? room.InverseTransformPoint(position) : position;
            localRotation = room != null ? Quaternion.Inverse(room.rotation) * rotation : rotation;
            return Frames.ToGltf(new Pose(new Vec3(local.x, local.y, local.z), new Quat(localRotation.x, localRotation.y, localRotation.z, localRotation.w)));
        }

        protected async void Send(Func<System.Threading.Tasks.Task<long>> call)
        {
            sending = true;
            lastSent = Time.unscaledTime;
            try
            {
                await call();
            }
            catch (Exception e)
            {
                if (!warned) Debug.LogWarning("holo: " + e.Message);
                warned = true;
            }
            finally
            {
                sending = false;
            }
        }
    }

    /// <summary>The head pose from the main camera (or `head`).</summary>
    public sealed class HoloHeadPoseSender : HoloPacedSender
    {
        public Transform head;

        void Update()
        {
            if (head == null && Camera.main != null) head = Camera.main.transform;
            if (head == null || !MaySend()) return;
            Vector3 local;
            Quaternion rotation;
            Pose pose = InRoom(head.position, head.rotation, out local, out rotation);
            if (!Moved(local, rotation)) return;
            Send(() => session.HeadPose(pose));
        }
    }

    /// <summary>The pointer ray of an XR ray interactor: its ray origin and forward direction.</summary>
    public sealed class HoloPointerSender : HoloPacedSender
    {
        public XRRayInteractor interactor;
        [Tooltip("Send only while the interactor is enabled and its ray is shown.")]
        public bool onlyWhileActive = true;

        void Update()
        {
            if (interactor == null || !MaySend()) return;
            if (onlyWhileActive && !interactor.isActiveAndEnabled) return;
            Transform origin = interactor.rayOriginTransform != null ? interactor.rayOriginTransform : interactor.transform;
            Vector3 local;
            Quaternion rotation;
            Pose pose = InRoom(origin.position, origin.rotation, out local, out rotation);
            if (!Moved(local, rotation)) return;
            // The ray: the origin, and the local forward (+Z in Unity) turned into the room.
            Vector3 forward = room != null ? room.InverseTransformDirection(origin.forward) : origin.forward;
            Ray ray = Frames.ToGltf(new Ray(new Vec3(local.x, local.y, local.z), new Vec3(forward.x, forward.y, forward.z)));
            Send(() => session.Pointer(ray));
        }

        /// <summary>The first XR ray interactor of the loaded scenes (null if none): the
        /// type is in a different namespace in XRI 2 and 3, which this assembly knows.</summary>
        public static XRRayInteractor FindRayInteractor()
        {
            return FindObjectOfType<XRRayInteractor>();
        }

        /// <summary>A marker where the ray meets a model (bind it to the trigger, say). The
        /// model meshes need colliders for the ray to hit them (HoloModelView adds none).
        /// Returns false when the ray hits no model.</summary>
        public bool MarkWhereItPoints(HoloSceneSync scene)
        {
            RaycastHit hit;
            if (interactor == null || !interactor.TryGetCurrent3DRaycastHit(out hit)) return false;
            HoloModelView view = hit.collider.GetComponentInParent<HoloModelView>();
            if (view == null) return false;
            Vector3 local = view.transform.InverseTransformPoint(hit.point);
            Vec3 point = Frames.ToGltf(new Vec3(local.x, local.y, local.z));
            Send(() => session.AddMarker(view.modelId, point));
            return true;
        }
    }
}
