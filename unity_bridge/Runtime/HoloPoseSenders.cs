// The wearer in the session: the head pose from the main camera, and the pointer ray from
// an XR ray interactor (controller or hand), each relative to the room (this device's
// tracking space) and converted to the glTF convention by Core/Frames.cs.
//
// What goes and when is the core's Pacer (Core/Pacer.cs, tested there; the web page's
// rules): at most 30 a second, one call at a time (a slow link drops poses rather than
// queueing them, and the newest goes), nothing within 1 mm and 0.2 degrees of the last
// pose or ray offered (a still head jitters by about 0.1 mm). This layer reads the
// tracked pose once a frame, offers it, and sends what the pacer gives. Only presenters
// and experts send (observers do not point: holo/session/state.py check_intent).
//
// NOT COMPILED HERE: needs UnityEngine and the XR Interaction Toolkit (2.x, or 3.x where
// HOLO_XRI_3 is defined by the assembly definition's version define).
using System;
using System.Threading.Tasks;
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
    /// <summary>What both senders share: the session, the room, the rate, and the call.</summary>
    public abstract class HoloPacedSender : MonoBehaviour
    {
        public HoloSession session;
        [Tooltip("This device's tracking space (the XR Origin's Camera Offset).")]
        public Transform room;
        [Tooltip("Sends per second at most; 0: the default (head poses 30, the session's limit for headsets; pointer rays 20, as the web page).")]
        public float maxRateHz = 0f;

        /// <summary>The rate when maxRateHz is 0.</summary>
        protected abstract float DefaultRateHz { get; }

        bool warned;

        /// <summary>Seconds on Unity's unscaled clock: the pacer's time.</summary>
        protected static double Now { get { return Time.unscaledTimeAsDouble; } }

        /// <summary>Joined as a presenter or an expert.</summary>
        protected bool MayPoint()
        {
            if (session == null || !session.IsJoined) return false;
            string role = session.Role;
            return role == Roles.Presenter || role == Roles.Expert;
        }

        /// <summary>A world pose relative to <paramref name="room"/> (null: the world), in the glTF convention.</summary>
        public static Pose InRoom(Transform room, Vector3 position, Quaternion rotation)
        {
            Vector3 local = room != null ? room.InverseTransformPoint(position) : position;
            Quaternion turned = room != null ? Quaternion.Inverse(room.rotation) * rotation : rotation;
            return Frames.ToGltf(new Pose(new Vec3(local.x, local.y, local.z), new Quat(turned.x, turned.y, turned.z, turned.w)));
        }

        /// <summary>Offers <paramref name="value"/> and sends what the pacer gives now.</summary>
        protected void Pace<T>(Pacer<T> pacer, T value, Func<T, Task<long>> call)
        {
            pacer.MaxPerSecond = maxRateHz > 0 ? maxRateHz : DefaultRateHz;
            pacer.Offer(value);
            T taken;
            if (pacer.TryTake(Now, out taken)) Send(pacer, taken, call);
        }

        async void Send<T>(Pacer<T> pacer, T value, Func<T, Task<long>> call)
        {
            try
            {
                await call(value);
            }
            catch (Exception e)
            {
                Warn(e);
            }
            finally
            {
                pacer.Done();
            }
        }

        /// <summary>The first failure in the log (not one a frame).</summary>
        protected void Warn(Exception e)
        {
            if (!warned) Debug.LogWarning("holo: " + e.Message);
            warned = true;
        }
    }

    /// <summary>The head pose from the main camera (or `head`).</summary>
    public sealed class HoloHeadPoseSender : HoloPacedSender
    {
        public Transform head;

        readonly Pacer<Pose> pacer = new Pacer<Pose>(30, Stillness.Still);

        protected override float DefaultRateHz { get { return 30f; } }

        void Update()
        {
            if (head == null && Camera.main != null) head = Camera.main.transform;
            if (head == null || !MayPoint()) return;
            Pace(pacer, InRoom(room, head.position, head.rotation), session.HeadPose);
        }
    }

    /// <summary>The pointer ray of an XR ray interactor: its ray origin and forward direction.</summary>
    public sealed class HoloPointerSender : HoloPacedSender
    {
        public XRRayInteractor interactor;
        [Tooltip("Send only while the interactor is enabled and its ray is shown.")]
        public bool onlyWhileActive = true;

        readonly Pacer<Ray> pacer = new Pacer<Ray>(20, Stillness.Still);

        protected override float DefaultRateHz { get { return 20f; } }

        void Update()
        {
            if (interactor == null || !MayPoint()) return;
            if (onlyWhileActive && !interactor.isActiveAndEnabled) return;
            Transform origin = interactor.rayOriginTransform != null ? interactor.rayOriginTransform : interactor.transform;
            // The ray: the origin, and the local forward (+Z in Unity) turned into the room.
            Vector3 local = room != null ? room.InverseTransformPoint(origin.position) : origin.position;
            Vector3 forward = room != null ? room.InverseTransformDirection(origin.forward) : origin.forward;
            Ray ray = Frames.ToGltf(new Ray(new Vec3(local.x, local.y, local.z), new Vec3(forward.x, forward.y, forward.z)));
            Pace(pacer, ray, session.Pointer);
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
            Mark(view.modelId, point);
            return true;
        }

        async void Mark(string modelId, Vec3 point)
        {
            try
            {
                await session.AddMarker(modelId, point);
            }
            catch (Exception e)
            {
                Warn(e);
            }
        }
    }
}
